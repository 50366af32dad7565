"""Deterministic fault injection for the fault-tolerance tests.

A real signal, sent by the process to itself at a chosen point of the loop, is
the only way to test "killed at step 5" or "killed while the step-4 checkpoint
is being written" without racing a timer. Set

    ALEXNET_JAX_INJECT_FAULT=SIGNAL@POINT:STEP[,SIGNAL@POINT:STEP...]

with SIGNAL one of sigkill, sigterm, sigint (Ctrl-C), and POINT one of
  step   after the train step for STEP was dispatched,
  save   right after the asynchronous save of STEP started (arrays still being
         written in the background),
  nan    (SIGNAL ignored) the train step for STEP sees a NaN learning rate.

Unset (the normal case) it costs one dict lookup per step.
"""

from __future__ import annotations

import os
import signal

ENV = "ALEXNET_JAX_INJECT_FAULT"
_SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT,
            "none": None}


def _parse(spec: str) -> dict[tuple[str, int], str]:
  faults = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    try:
      sig, rest = item.split("@")
      point, step = rest.split(":")
      faults[(point, int(step))] = sig
      if sig not in _SIGNALS:
        raise ValueError(sig)
    except ValueError as e:
      raise ValueError(f"{ENV}={spec!r}: cannot parse {item!r}; expected SIGNAL@POINT:STEP "
                       f"with SIGNAL in {sorted(_SIGNALS)}") from e
  return faults


_FAULTS = _parse(os.environ.get(ENV, ""))


def hit(point: str, step: int) -> bool:
  """Fires the fault registered for (point, step), if any; True when one is registered."""
  sig = _FAULTS.get((point, int(step)))
  if sig is None:
    return False
  if _SIGNALS[sig] is not None:
    os.kill(os.getpid(), _SIGNALS[sig])
  return True
