"""Command lines: `python main.py` / `alexnet-train`, and the config handling they share.

Whatever is wrong with a command line is said in one line before JAX or TensorFlow
start; `--help` lists the shipped configs and every config key.
"""

from __future__ import annotations

import os
import sys
import traceback

TRAIN_USAGE = """\
usage: python main.py --config=CONFIG[:ARG] --workdir=DIR [--config.KEY=VALUE ...]
       [--coordinator_address=HOST:PORT --num_processes=N --process_id=I | --auto_distributed]

Trains AlexNet; rerunning the same command resumes. CONFIG is a shipped config's
name (below) or a path to a config file; ARG picks variants, e.g.
--config=default:variant=seed or --config=default:tiny.

shipped configs: {configs}

config keys (--config.KEY=VALUE; defaults are configs/default.py's, the paper's):
{keys}
"""


def quiet_startup() -> None:
  """Before TensorFlow is imported: no C++ info logs."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def absl_command(define_flags, main):
  """The `run()` of an absl command whose flags are defined only when it runs (importing
  its module must not claim flag names)."""

  def run():
    from absl import app  # pylint: disable=g-import-not-at-top
    define_flags()
    app.run(main)

  return run


class UsageError(Exception):
  """A command line that cannot work; the message is one line."""


def _split(argv):
  """(config spec, index of the --config argument(s), [(index, key, raw)] overrides)."""
  spec, where, overrides = None, [], []
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--config" and i + 1 < len(argv):
      spec, where = argv[i + 1], [i, i + 1]
      i += 2
      continue
    if arg.startswith("--config="):
      spec, where = arg[len("--config="):], [i]
    elif arg.startswith("--config."):
      key, _, raw = arg[len("--config."):].partition("=")
      overrides.append((i, key, raw))
    i += 1
  return spec, where, overrides


def check_config_args(argv: list[str]) -> list[str]:
  """Validates --config and its overrides without JAX; returns argv with the config resolved.

  Raises UsageError with a one-line message.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  spec, where, overrides = _split(argv)
  if spec is None:
    raise UsageError("--config=CONFIG is required (a shipped config's name or a path); "
                     "see --help.")
  name, sep, arg = spec.partition(":")
  try:
    path = config_lib.resolve_path(name)
  except FileNotFoundError as e:
    raise UsageError(str(e)) from None
  try:
    config = config_lib.load(path + sep + arg)
  except SyntaxError as e:
    raise UsageError(f"{e.filename}:{e.lineno}: {e.msg} (in the config file).") from None
  except Exception as e:  # pylint: disable=broad-except  (whatever the file raises)
    frame = traceback.extract_tb(e.__traceback__)[-1]
    raise UsageError(f"Config {spec!r} failed to load: {type(e).__name__}: {e} "
                     f"({frame.filename}:{frame.lineno}).") from None
  for _, key, _ in overrides:
    if not config_lib.has_key(config, key):
      close = config_lib.closest_key(key)
      raise UsageError(f"Unknown config key --config.{key}"
                       + (f"; did you mean --config.{close}?" if close else
                          "; `--help` lists every key."))
  argv = list(argv)
  argv[where[-1]] = (f"--config={path}{sep}{arg}" if len(where) == 1 else f"{path}{sep}{arg}")
  return argv


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _define_train_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and config.json go.")
  flags.DEFINE_string("coordinator_address", None,
                      "HOST:PORT of process 0, to start a multi-process job.")
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process job.")
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-process job.")
  flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                       "A multi-process job fails (not hangs) this long after a process dies.")
  flags.DEFINE_integer("initialization_timeout", None,
                       "Seconds to wait for every process to join (default 60 on one host, "
                       "300 across hosts).")
  flags.DEFINE_bool("auto_distributed", False,
                    "Let jax.distributed detect the cluster (TPU pods, SLURM's srun).")
  config_flags.DEFINE_config_file("config", None, "Config: a shipped name or a path[:arg].",
                                  lock_config=True)


def train(argv: list[str] | None = None) -> None:
  """`python main.py ...`: checks the command line, then trains (see TRAIN_USAGE)."""
  argv = list(sys.argv if argv is None else argv)
  quiet_startup()
  if any(a in ("-h", "--help", "--helpfull", "-help") for a in argv[1:]):
    from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
    try:
      print(TRAIN_USAGE.format(configs=", ".join(config_lib.shipped_configs()),
                               keys=config_lib.help_text()))
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted.
      sys.stdout = None
    sys.exit(0)
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    argv = check_config_args(argv)
    if "workdir" not in flags.FLAGS:
      _define_train_flags()
    try:
      rest = flags.FLAGS(argv)
    except flags.Error as e:
      raise UsageError(str(e).splitlines()[0]) from None
    if len(rest) > 1:
      raise UsageError(f"Unexpected arguments {rest[1:]}; see --help.")
    if not flags.FLAGS.workdir:
      raise UsageError("--workdir=DIR is required: where the run's files go.")
  except UsageError as e:
    _fail(str(e))
  app.run(lambda _: _train_main(flags.FLAGS), argv=argv, flags_parser=lambda a: a)


def _train_main(flag_values) -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  try:
    runtime.initialize(coordinator_address=flag_values.coordinator_address,
                       num_processes=flag_values.num_processes,
                       process_id=flag_values.process_id, auto=flag_values.auto_distributed,
                       heartbeat_timeout_seconds=flag_values.heartbeat_timeout_seconds,
                       initialization_timeout=flag_values.initialization_timeout)
  except runtime.StartupError as e:
    _fail(str(e))
  from alexnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from alexnet_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    final = train_lib.train_and_evaluate(flag_values.config, flag_values.workdir)
  except (workdir_lib.WorkdirError, checkpoint.CheckpointError, ValueError, FileNotFoundError,
          PermissionError, train_lib.NonFiniteLossError) as e:
    logging.error("%s", e)
    _fail(str(e).splitlines()[0] + (" (details above)" if "\n" in str(e) else ""))
  if not final.get("already_finished"):  # That case was reported with its metrics already.
    logging.info("Done at step %s: %s", final.get("step"),
                 {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
