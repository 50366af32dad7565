"""Config sweeps: run a grid of `main.py` trainings, then tabulate and plot them.

A sweep file is a config file with one more function. `get_config(arg=None)`
returns the base config (it usually imports `configs/default.py` or
`configs/quickstart.py` and overrides a few fields); `get_sweep(arg=None)`
returns the grid as a list of override dicts with dotted keys:

    from alexnet_jax import sweep

    def get_config(arg=None):
      return quickstart.get_config()

    def get_sweep(arg=None):
      return sweep.product(sweep.axis("model.activation", ["relu", "tanh"]),
                           sweep.axis("model.lrn", [True, False]))

Because the sweep file has `get_config`, it is itself the `--config` of every
point, and a point is the plain training command

    python main.py --config=SWEEP.py[:ARG] --workdir=DIR/NAME --config.KEY=VALUE ...

where NAME spells out the overrides (`model.activation=tanh,model.lrn=False`,
or `baseline` for none). Nothing else describes a point, so the commands that
`--print_commands` prints for a cluster scheduler are exactly what the local
runner executes, and the training loop's own resume makes reruns safe.

CLI (run from anywhere; the commands run in the repository root):

    python -m alexnet_jax.sweep --sweep=configs/sweeps/FILE.py[:ARG] --workdir=DIR
        [--only=NAME] [--print_commands] [--config.KEY=VALUE ...]
    python -m alexnet_jax.sweep report --workdir=DIR [--target_train_top1=0.75]

Trailing `--config.KEY=VALUE` flags go to every point (e.g. a data directory)
and are not part of the point names. The runner trains the points one after
another, skips finished ones, resumes interrupted ones, carries on past a
failure and exits non-zero naming the failed points; then it writes the
report. Each point directory gets `sweep.log` (the run's output) and
`sweep_point.json` (status, command, accumulated wall time).

This module imports no JAX or TensorFlow: sweep files import it while
`main.py` loads them, and the report runs anywhere matplotlib does.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from alexnet_jax import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POINT_FILE = "sweep_point.json"  # per point: status, command, wall time
LOG_FILE = "sweep.log"  # per point: the training run's stdout and stderr
SWEEP_FILE = "sweep.json"  # per sweep: the sweep spec and its points in order
BASELINE = "baseline"  # name of the point with no overrides
MAX_NAME_LEN = 160  # longer names are cut and made unique with a hash

# ----------------------------------------------------------------------------
# Building grids.
# ----------------------------------------------------------------------------


def axis(key: str, values: Sequence[Any]) -> list[dict[str, Any]]:
  """One axis of a grid: `[{key: v} for v in values]`.

  By convention the first value is the baseline's (what `one_at_a_time` keeps).
  """
  if not isinstance(key, str) or not key:
    raise ValueError(f"An axis key must be a dotted config key string, got {key!r}.")
  values = list(values)
  if not values:
    raise ValueError(f"Axis {key!r} has no values.")
  return [{key: v} for v in values]


def product(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """All combinations of the axes (each a list of override dicts), first axis slowest.

  Axes may be any lists of dicts (e.g. a zipped pair of keys), so
  `product(axis("a", [1, 2]), [{"b": 1, "c": 2}, {"b": 3, "c": 4}])` works.
  """
  points = []
  for combo in itertools.product(*axes):
    point: dict[str, Any] = {}
    for part in combo:
      clash = set(point) & set(part)
      if clash:
        raise ValueError(f"Axes overlap on {sorted(clash)}: a key may appear in one axis only.")
      point.update(part)
    points.append(point)
  return points


def one_at_a_time(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """The baseline (`{}`) plus, for each axis, its non-baseline values alone.

  This is how the AlexNet paper reports its ablations: each claim (ReLU, LRN,
  overlapping pooling, ...) changes one thing against the full model, which
  costs 1 + sum(len(axis) - 1) runs instead of the product's prod(len(axis)).
  The first value of every axis is taken to be the base config's own.
  """
  points: list[dict[str, Any]] = [{}]
  for ax in axes:
    points.extend(dict(p) for p in list(ax)[1:])
  return points


# ----------------------------------------------------------------------------
# Names and commands.
# ----------------------------------------------------------------------------

_SCALARS = (bool, int, float, str)


def format_value(value: Any) -> str:
  """The `--config.KEY=VALUE` spelling of an override value (ml_collections parses it)."""
  if isinstance(value, float):
    return repr(value)  # shortest exact: 0.1, 1e-05
  if isinstance(value, _SCALARS):
    return str(value)
  if isinstance(value, (tuple, list)) and all(isinstance(v, _SCALARS) for v in value):
    return "(" + ", ".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  raise ValueError(
      f"Override value {value!r} ({type(value).__name__}) cannot be passed as a --config flag; "
      "use a bool, int, float, str, or a tuple of those (None cannot be set from the command "
      "line: leave the key out instead).")


def _name_value(value: Any) -> str:
  """A value as spelled in point names: like the flag, but `(30, 60)` -> `30_60`.

  Commas separate keys in a name, so none may appear inside a value.
  """
  if isinstance(value, (tuple, list)):
    format_value(value)  # same checks as the flag
    return "_".join(_name_value(v) for v in value)
  return format_value(value).replace(",", "_")


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def point_name(overrides: Mapping[str, Any]) -> str:
  """A readable, filesystem-safe directory name: `k1=v1,k2=v2` in the dict's order.

  Characters outside `[A-Za-z0-9._=,+-]` become `_`; very long names are cut
  and end in a short hash of the full spelling so they stay unique.
  """
  if not overrides:
    return BASELINE
  full = ",".join(f"{k}={_name_value(v)}" for k, v in overrides.items())
  name = _UNSAFE.sub("_", full).strip("_") or "point"
  if len(name) > MAX_NAME_LEN:
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    name = f"{name[:MAX_NAME_LEN - 9]}-{digest}"
  return name


@dataclasses.dataclass(frozen=True)
class Point:
  """One training run of a sweep."""
  name: str
  overrides: dict

  def flags(self) -> list[str]:
    return [f"--config.{k}={format_value(v)}" for k, v in self.overrides.items()]


def split_spec(spec: str) -> tuple[str, str | None]:
  """`path.py[:ARG]` -> (path, ARG or None)."""
  path, sep, arg = spec.partition(":")
  if not path.endswith(".py"):
    raise ValueError(f"--sweep={spec!r} must name a Python file, as FILE.py or FILE.py:ARG.")
  return path, (arg if sep else None)


def _load_module(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Sweep file {path!r} does not exist.")
  if REPO_ROOT not in sys.path:  # sweep files import `configs.*` like main.py does
    sys.path.insert(0, REPO_ROOT)
  name = "_sweep_" + re.sub(r"\W", "_", os.path.abspath(path))
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  for fn in ("get_config", "get_sweep"):
    if not callable(getattr(module, fn, None)):
      raise ValueError(f"Sweep file {path} has no {fn}(arg=None) function; a sweep file needs "
                       "get_config (the base config) and get_sweep (a list of override dicts).")
  return module


def _call_with_arg(fn, arg):
  """Calls `fn(arg)`, or `fn()` when it takes no argument and arg is empty."""
  if inspect.signature(fn).parameters:
    return fn(arg)
  if arg:
    raise ValueError(f"{fn.__name__}() takes no argument, but the sweep was given ':{arg}'.")
  return fn()


def _has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    try:
      if part not in node:
        return False
      node = node[part]
    except TypeError:  # descended into a leaf
      return False
  return True


def load_points(path: str, arg: str | None) -> list[Point]:
  """Expands a sweep file into named points, checking keys and names before anything runs.

  An unknown key is a grid error (a typo would fail every point), so it stops
  the sweep here; a bad *value* is left to the point's own run to report.
  """
  module = _load_module(path)
  grid = _call_with_arg(module.get_sweep, arg)
  if not isinstance(grid, (list, tuple)) or not all(isinstance(p, Mapping) for p in grid):
    raise ValueError(f"get_sweep() in {path} must return a list of dicts, got {type(grid).__name__}.")
  if not grid:
    raise ValueError(f"get_sweep() in {path} returned no points.")
  config = _call_with_arg(module.get_config, arg)
  points, seen = [], {}
  for overrides in grid:
    overrides = dict(overrides)
    for key in overrides:
      if not _has_key(config, key):
        raise ValueError(f"Sweep {path}: override key {key!r} is not a key of the base config "
                         "(see configs/default.py for every key).")
    name = point_name(overrides)
    if name in seen:
      raise ValueError(f"Sweep {path}: points {seen[name]} and {overrides} share the name "
                       f"{name!r}; every point must be distinct.")
    seen[name] = overrides
    points.append(Point(name, overrides))
  return points


def point_argv(point: Point, *, sweep_path: str, arg: str | None, workdir: str,
               extra: Sequence[str] = (), python: str = "python") -> list[str]:
  """The `main.py` command of one point, as an argv list (run in the repository root)."""
  config = sweep_path + (f":{arg}" if arg is not None else "")
  return [python, "main.py", f"--config={config}",
          f"--workdir={os.path.join(workdir, point.name)}", *point.flags(), *extra]


def _display_path(path: str) -> str:
  """Relative to the repository root when inside it (the commands run there), else absolute."""
  absolute = os.path.abspath(path)
  rel = os.path.relpath(absolute, REPO_ROOT)
  return absolute if rel.startswith("..") else rel


def print_commands(points, *, sweep_path, arg, workdir, extra=(), out=None):
  """One shell-quoted, runnable line per point (prefixed by a `cd` outside the repo root)."""
  out = out or sys.stdout
  prefix = ""
  if os.path.abspath(os.getcwd()) != REPO_ROOT:
    prefix = f"cd {shlex.quote(REPO_ROOT)} && "
  for point in points:
    argv = point_argv(point, sweep_path=_display_path(sweep_path), arg=arg,
                      workdir=_display_path(workdir), extra=extra)
    print(prefix + shlex.join(argv), file=out)


# ----------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------


def read_point_state(point_dir: str) -> dict[str, Any]:
  path = os.path.join(point_dir, POINT_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, data: Mapping[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
  os.replace(tmp, path)


def run_finished(point_dir: str) -> bool:
  """True when the training run in `point_dir` trained every step and evaluated the last.

  train.train_and_evaluate writes done.json only then (and removes it when a
  run starts), so a run stopped early (SIGTERM, crash, kill) never has one.
  """
  done = workdir_lib.read_done(point_dir)
  return done is not None and done.get("step", -1) >= done.get("total_steps", 0)


class _Forwarder:
  """Forwards SIGINT/SIGTERM to the running point and remembers that it came.

  The child (the training loop) saves a checkpoint on SIGTERM and exits 0; the
  runner must then stop rather than count the point as finished.
  """

  def __init__(self):
    self.child = None
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signum = signum
    if self.child is not None and self.child.poll() is None:
      # SIGTERM either way: the training loop saves and exits on it.
      self.child.send_signal(signal.SIGTERM)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def run_points(points: Sequence[Point], *, sweep_path: str, arg: str | None, workdir: str,
               extra: Sequence[str] = (), out=None) -> int:
  """Trains the points in order; returns the exit code (0, 1 on failures, 128+sig)."""
  out = out or sys.stdout
  workdir = os.path.abspath(workdir)
  sweep_path = os.path.abspath(sweep_path)
  os.makedirs(workdir, exist_ok=True)
  failed, finished, skipped = [], [], []
  env = dict(os.environ)
  env.setdefault("PYTHONUNBUFFERED", "1")

  def say(msg):
    print(f"[sweep] {msg}", file=out, flush=True)

  with _Forwarder() as forwarder:
    for i, point in enumerate(points):
      if forwarder.signum is not None:  # came between two points
        say(f"stopped by signal {forwarder.signum} before {point.name}; rerun to go on.")
        return 128 + forwarder.signum
      point_dir = os.path.join(workdir, point.name)
      argv = point_argv(point, sweep_path=sweep_path, arg=arg, workdir=workdir, extra=extra,
                        python=sys.executable)
      command = argv[1:]  # the interpreter path is not part of a point's identity
      state = read_point_state(point_dir)
      tag = f"({i + 1}/{len(points)}) {point.name}"
      if state.get("status") == "finished":
        if state.get("command") == command:
          say(f"{tag}: finished already, skipping.")
          skipped.append(point.name)
          continue
        say(f"{tag}: finished with another command; rerunning (training resumes).")
      os.makedirs(point_dir, exist_ok=True)
      resuming = os.path.isdir(os.path.join(point_dir, "checkpoints")) and any(
          n.isdigit() for n in os.listdir(os.path.join(point_dir, "checkpoints")))
      say(f"{tag}: {'resuming' if resuming else 'starting'}: {shlex.join(argv)}")
      state.update(name=point.name, overrides=point.overrides, command=command,
                   status="running", attempts=state.get("attempts", 0) + 1)
      state.setdefault("wall_time_sec", 0.0)
      _write_json(os.path.join(point_dir, POINT_FILE), state)

      start = time.time()
      with open(os.path.join(point_dir, LOG_FILE), "a") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n")
        log.flush()
        forwarder.child = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT)
        returncode = forwarder.child.wait()
        forwarder.child = None
      seconds = time.time() - start
      state["wall_time_sec"] = state["wall_time_sec"] + seconds
      state["returncode"] = returncode
      complete = run_finished(point_dir)
      if forwarder.signum is not None:
        state["status"] = "interrupted"
      elif returncode == 0 and complete:
        state["status"] = "finished"
      else:
        state["status"] = "failed"
      _write_json(os.path.join(point_dir, POINT_FILE), state)

      if state["status"] == "interrupted":
        say(f"{tag}: interrupted by signal {forwarder.signum} after {seconds:.0f}s; rerun the "
            "same command to resume.")
        return 128 + forwarder.signum
      if state["status"] == "finished":
        say(f"{tag}: finished in {seconds:.0f}s.")
        finished.append(point.name)
        continue
      why = (f"exit code {returncode}" if returncode != 0
             else f"exited 0 without finishing: no {workdir_lib.DONE_FILE}")
      say(f"{tag}: FAILED ({why}); last lines of {os.path.join(point_dir, LOG_FILE)}:")
      for line in _tail(os.path.join(point_dir, LOG_FILE), 15):
        print(f"    {line}", file=out)
      failed.append(point.name)

  say(f"done: {len(finished)} finished, {len(skipped)} skipped (finished before), "
      f"{len(failed)} failed.")
  if failed:
    say("failed points (see their sweep.log; rerun to retry):")
    for name in failed:
      print(f"    {name}", file=out)
    return 1
  return 0


def _tail(path: str, n: int) -> list[str]:
  with open(path, errors="replace") as f:
    return [line.rstrip("\n") for line in f.readlines()[-n:]]


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class PointResult:
  """What the report says about one point, read from its metrics.jsonl."""
  name: str
  status: str
  steps: int | None
  final_top1: float | None
  final_top5: float | None
  best_top1: float | None
  best_top5: float | None
  wall_time_sec: float | None
  target_step: int | None  # first step whose logged train_top1 reached the target
  records: list


def summarize_point(point_dir: str, *, target_train_top1: float = 0.75) -> PointResult:
  """Final/best eval accuracy, steps, wall time and time-to-target of one point.

  Wall time is the runner's own clock summed over attempts (sweep_point.json);
  for points run elsewhere (e.g. from --print_commands) it falls back to the
  largest `uptime` the training loop logged, which covers its last process only.
  """
  records = workdir_lib.read_metrics(point_dir)
  state = read_point_state(point_dir)
  evals = [r for r in records if "eval_top1" in r]
  # A resumed run may log a step twice; the later record is the one that counts.
  final = max(reversed(evals), key=lambda r: r["step"]) if evals else {}
  wall = state.get("wall_time_sec")
  if wall is None:
    uptimes = [r["uptime"] for r in records if "uptime" in r]
    wall = max(uptimes) if uptimes else None
  target_step = None
  for r in sorted((r for r in records if "train_top1" in r), key=lambda r: r["step"]):
    if r["train_top1"] >= target_train_top1:
      target_step = int(r["step"])
      break
  status = state.get("status") or ("complete" if run_finished(point_dir) else
                                   "incomplete" if records else "no metrics")
  return PointResult(
      name=os.path.basename(os.path.normpath(point_dir)),
      status=status,
      steps=max((int(r["step"]) for r in records), default=None),
      final_top1=final.get("eval_top1"),
      final_top5=final.get("eval_top5"),
      best_top1=max((r["eval_top1"] for r in evals), default=None),
      best_top5=max((r["eval_top5"] for r in evals if "eval_top5" in r), default=None),
      wall_time_sec=wall,
      target_step=target_step,
      records=records)


def _pct(x):
  return "—" if x is None else f"{100.0 * x:.2f}%"


def _duration(seconds):
  if seconds is None:
    return "—"
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def point_dirs(workdir: str) -> list[str]:
  """Point directories in sweep order (sweep.json), then any others by name."""
  ordered = []
  spec = os.path.join(workdir, SWEEP_FILE)
  if os.path.exists(spec):
    with open(spec) as f:
      ordered = [p["name"] for p in json.load(f).get("points", [])]
  present = sorted(
      n for n in os.listdir(workdir)
      if os.path.isfile(os.path.join(workdir, n, workdir_lib.METRICS_FILE))
      or os.path.isfile(os.path.join(workdir, n, POINT_FILE)))
  names = [n for n in ordered if n in present] + [n for n in present if n not in ordered]
  return [os.path.join(workdir, n) for n in names]


def _plot(results, path, *, key, ylabel, title, transform=None, hline=None):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  drawn = 0
  for res in results:
    rs = sorted((r for r in res.records if key in r), key=lambda r: r["step"])
    if not rs:
      continue
    ys = [transform(r[key]) if transform else r[key] for r in rs]
    ax.plot([r["step"] for r in rs], ys, label=res.name, marker="." if len(rs) < 40 else None)
    drawn += 1
  if hline is not None:
    ax.axhline(hline, color="gray", linestyle="--", linewidth=1, label=f"target {hline:g}")
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  if drawn:
    ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(workdir: str, *, target_train_top1: float = 0.75) -> str:
  """Writes workdir/report.md plus train_loss.png, train_error.png, eval_top1.png.

  Returns the report's path.
  """
  dirs = point_dirs(workdir)
  if not dirs:
    raise FileNotFoundError(f"No sweep points (subdirectories with {workdir_lib.METRICS_FILE}) in {workdir}.")
  results = [summarize_point(d, target_train_top1=target_train_top1) for d in dirs]
  target_err = 1.0 - target_train_top1
  lines = [f"# Sweep report: {workdir}", ""]
  spec = os.path.join(workdir, SWEEP_FILE)
  if os.path.exists(spec):
    with open(spec) as f:
      lines += [f"Sweep: `{json.load(f).get('sweep')}`", ""]
  lines += [
      f"| point | status | steps | final eval top-1 | best eval top-1 | final eval top-5 "
      f"| best eval top-5 | step train top-1 ≥ {target_train_top1:g} | wall time |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in results:
    lines.append(
        f"| `{r.name}` | {r.status} | {'—' if r.steps is None else r.steps} "
        f"| {_pct(r.final_top1)} | {_pct(r.best_top1)} | {_pct(r.final_top5)} "
        f"| {_pct(r.best_top5)} | {'—' if r.target_step is None else r.target_step} "
        f"| {_duration(r.wall_time_sec)} |")
  lines += ["",
            f"\"step train top-1 ≥ {target_train_top1:g}\" is the first logged step whose "
            f"training-window accuracy reached it ({100 * target_err:g}% training error, "
            "the paper's ReLU-vs-tanh yardstick); it is only as fine as log_every_steps.",
            "", "![training loss](train_loss.png)", "",
            "![training error](train_error.png)", "", "![eval top-1](eval_top1.png)", ""]
  _plot(results, os.path.join(workdir, "train_loss.png"), key="train_loss",
        ylabel="training loss", title="Training loss")
  _plot(results, os.path.join(workdir, "train_error.png"), key="train_top1",
        ylabel="training error (1 - train top-1)", title="Training error",
        transform=lambda v: 1.0 - v, hline=target_err)
  _plot(results, os.path.join(workdir, "eval_top1.png"), key="eval_top1",
        ylabel="eval top-1", title="Eval top-1 accuracy")
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


# ----------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------


def _parser():
  p = argparse.ArgumentParser(
      prog="python -m alexnet_jax.sweep",
      description="Run a config sweep (default) or write its report.",
      epilog="Unrecognised --config.KEY=VALUE flags are passed to every point.")
  p.add_argument("command", nargs="?", default="run", choices=("run", "report"))
  p.add_argument("--sweep", help="Sweep file, FILE.py or FILE.py:ARG (needed for run).")
  p.add_argument("--workdir", required=True, help="Sweep directory; each point gets DIR/NAME.")
  p.add_argument("--only", action="append", default=[],
                 help="Run only the point with this name (repeatable).")
  p.add_argument("--print_commands", action="store_true",
                 help="Print one `python main.py ...` line per point instead of running.")
  p.add_argument("--no_report", action="store_true", help="Do not write the report after a run.")
  p.add_argument("--target_train_top1", type=float, default=0.75,
                 help="Report the first step whose training accuracy reached this.")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args, unknown = _parser().parse_known_args(argv)
  bad = [u for u in unknown if not u.startswith("--config.")]
  if bad:
    _parser().error(f"unrecognised arguments {bad}; only --config.KEY=VALUE flags pass through.")
  if args.command == "report":
    path = write_report(args.workdir, target_train_top1=args.target_train_top1)
    print(open(path).read())
    return 0
  if not args.sweep:
    _parser().error("--sweep=FILE.py[:ARG] is required to run a sweep.")
  sweep_path, arg = split_spec(args.sweep)
  points = all_points = load_points(sweep_path, arg)
  if args.only:
    names = [p.name for p in points]
    missing = [o for o in args.only if o not in names]
    if missing:
      _parser().error(f"--only={missing[0]!r} is not a point of this sweep; its points are:\n  "
                      + "\n  ".join(names))
    points = [p for p in points if p.name in args.only]
  if args.print_commands:
    print_commands(points, sweep_path=sweep_path, arg=arg, workdir=args.workdir, extra=unknown)
    return 0
  os.makedirs(args.workdir, exist_ok=True)
  spec_path = os.path.join(args.workdir, SWEEP_FILE)
  if not args.only or not os.path.exists(spec_path):
    _write_json(spec_path, {"sweep": args.sweep, "extra_flags": list(unknown),
                            "points": [{"name": p.name, "overrides": p.overrides}
                                       for p in all_points]})
  code = run_points(points, sweep_path=sweep_path, arg=arg, workdir=args.workdir, extra=unknown)
  if not args.no_report and code < 128:
    try:
      print(f"[sweep] report: {write_report(args.workdir, target_train_top1=args.target_train_top1)}")
    except Exception as e:  # pylint: disable=broad-except  (a report must not mask the run's result)
      print(f"[sweep] could not write the report: {type(e).__name__}: {e}")
  return code


if __name__ == "__main__":
  sys.exit(main())
