"""Deterministic fault injection for the fault-tolerance tests, through the loop's hooks.

A real signal, sent by the process to itself at a chosen point of the loop, is
the only way to test "killed at step 5" or "killed while the step-4 checkpoint
is being written" without racing a timer. A test sets, for a training process
it starts (`tests.helpers.child_env(fault=...)`),

    ALEXNET_JAX_INJECT_FAULT=SIGNAL@POINT:STEP[,SIGNAL@POINT:STEP...]

with SIGNAL one of sigkill, sigterm, sigint (Ctrl-C), and POINT one of
  step   after the train step for STEP was dispatched (a `hooks` entry of
         `train.train_and_evaluate`),
  save   right after the asynchronous save of STEP started, arrays still being
         written in the background (a `save_hooks` entry).

`tests/fault_site/sitecustomize.py`, on the child's PYTHONPATH, calls
`install()` at start-up, so the fault reaches any training process: main.py,
`python -m alexnet_jax`, each process of a multi-process job, a sweep's points.
"""

import functools
import os
import signal

ENV = "ALEXNET_JAX_INJECT_FAULT"
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_site")
_SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}


def parse(spec: str) -> dict[tuple[str, int], int]:
  """{(point, step): signal} of a spec."""
  faults = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    sig, _, rest = item.partition("@")
    point, _, step = rest.partition(":")
    if sig not in _SIGNALS or point not in ("step", "save") or not step.isdigit():
      raise ValueError(f"{ENV}={spec!r}: cannot parse {item!r}; expected SIGNAL@POINT:STEP "
                       f"with SIGNAL in {sorted(_SIGNALS)} and POINT step or save")
    faults[(point, int(step))] = _SIGNALS[sig]
  return faults


def hooks(spec: str):
  """(hooks, save_hooks) for `train_and_evaluate` that send the spec's signals."""
  faults = parse(spec)

  def at(point):
    def hook(step):
      if (point, step) in faults:
        os.kill(os.getpid(), faults[(point, step)])
    return hook

  return [at("step")], [at("save")]


def install() -> None:
  """Makes `train.train_and_evaluate` run the hooks of $ALEXNET_JAX_INJECT_FAULT."""
  spec = os.environ.get(ENV)
  if not spec:
    return
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  step_hooks, save_hooks = hooks(spec)
  train.train_and_evaluate = functools.partial(train.train_and_evaluate, hooks=step_hooks,
                                               save_hooks=save_hooks)
