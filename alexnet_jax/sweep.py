"""Config sweeps: grids of training runs, run here, in parallel, or as a SLURM job array.

A sweep file is a config file with one more function: `get_config(arg=None)`
returns the base config and `get_sweep(arg=None)` the grid, a list of override
dicts with dotted keys:

    def get_sweep(arg=None):
      return sweep.product(sweep.axis("model.activation", ["relu", "tanh"]),
                           sweep.axis("model.lrn", [True, False]))

A point is the plain training command `Sweep.command` (`--print_commands`
prints it) in DIR/NAME, NAME spelling out its overrides (`point_name`).
Running, skipping, resuming: README.md "Sweeps and the paper's claims" and
`python -m alexnet_jax.sweep --help`.

This module imports neither JAX nor TensorFlow: sweep files import it while
training loads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
from typing import Any, Mapping, Sequence

from alexnet_jax import workdir as workdir_lib

POINT_FILE = "sweep_point.json"  # per point: status, command, attempts, wall time
LOG_FILE = "sweep.log"  # per point: the training run's output
SWEEP_FILE = "sweep.json"  # per sweep: the spec, extra flags and the points in order
BASELINE = "baseline"  # the name of the point with no overrides
MAX_NAME_LEN = 160  # longer names are cut and made unique with a hash

# ----------------------------------------------------------------------------
# Building grids.
# ----------------------------------------------------------------------------


def axis(key: str, values: Sequence[Any]) -> list[dict[str, Any]]:
  """One axis of a grid: `[{key: v} for v in values]` (the first value is the baseline's)."""
  if not isinstance(key, str) or not key:
    raise ValueError(f"An axis key must be a dotted config key string, got {key!r}.")
  values = list(values)
  if not values:
    raise ValueError(f"Axis {key!r} has no values.")
  return [{key: v} for v in values]


def product(*axes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """All combinations of the axes (lists of override dicts), first axis slowest."""
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

  How the AlexNet paper reports its ablations: each claim changes one thing
  against the full model, 1 + sum(len(axis) - 1) runs instead of the product.
  """
  points: list[dict[str, Any]] = [{}]
  for ax in axes:
    points.extend(dict(p) for p in list(ax)[1:])
  return points


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper claim a sweep tests: its arm against the baseline, seed by seed.

  A sweep file that defines `CLAIMS = (Claim(...), ...)` gets a verdict table
  in `sweep report` (see `sweep_report.CLAIM_METRICS` for the metrics).
  `arm` holds the overrides that drop the paper's choice (None: the metric is
  read off the baseline alone); `expect` is the effect's sign if the paper is
  right; `threshold` is the train top-1 of `epochs_to_train_top1`.
  """
  name: str
  section: str
  quote: str
  arm: Mapping[str, Any] | None
  metric: str
  expect: int
  threshold: float | None = None


# ----------------------------------------------------------------------------
# Names and commands.
# ----------------------------------------------------------------------------

_SCALARS = (bool, int, float, str)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def format_value(value: Any) -> str:
  """The `--config.KEY=VALUE` spelling of an override value."""
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
  if isinstance(value, (tuple, list)):
    format_value(value)
    return "_".join(_name_value(v) for v in value)
  return format_value(value).replace(",", "_")


def point_name(overrides: Mapping[str, Any]) -> str:
  """A readable, filesystem-safe name: `k1=v1,k2=v2`; long names end in a hash."""
  if not overrides:
    return BASELINE
  full = ",".join(f"{k}={_name_value(v)}" for k, v in overrides.items())
  name = _UNSAFE.sub("_", full).strip("_") or "point"
  if len(name) > MAX_NAME_LEN:
    name = f"{name[:MAX_NAME_LEN - 9]}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"
  return name


@dataclasses.dataclass(frozen=True)
class Point:
  """One training run of a sweep."""
  name: str
  overrides: dict

  def flags(self) -> list[str]:
    return [f"--config.{k}={format_value(v)}" for k, v in self.overrides.items()]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep file (resolved to a path), its argument and its points."""
  path: str
  arg: str | None
  points: list[Point]

  def command(self, point: Point, workdir, extra: Sequence[str] = (), python="python"):
    """The training command of one point, as an argv list (runs from any directory)."""
    spec = self.path + (f":{self.arg}" if self.arg is not None else "")
    return [python, "-m", "alexnet_jax", f"--config={spec}",
            f"--workdir={workdir_lib.path(workdir) / point.name}", *point.flags(), *extra]


def load(spec: str) -> Sweep:
  """`NAME_OR_PATH[:ARG]` -> a Sweep, checking keys and names before anything runs.

  An unknown key is a grid error (a typo would fail every point); a bad value
  is left to the point's own run to report.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  name, sep, arg = spec.partition(":")
  path = config_lib.resolve_path(name)
  arg = arg if sep else None
  module = config_lib.load_module(path, "get_config", "get_sweep")
  grid = config_lib.call_with_arg(module.get_sweep, arg)
  if not isinstance(grid, (list, tuple)) or not all(isinstance(p, Mapping) for p in grid):
    raise ValueError(f"get_sweep() in {path} must return a list of dicts, got "
                     f"{type(grid).__name__}.")
  if not grid:
    raise ValueError(f"get_sweep() in {path} returned no points.")
  config = config_lib.call_with_arg(module.get_config, arg)
  points, seen = [], {}
  for overrides in grid:
    overrides = dict(overrides)
    for key in overrides:
      if not config_lib.has_key(config, key):
        close = config_lib.closest_key(key)
        raise ValueError(f"Sweep {path}: override key {key!r} is not a config key"
                         + (f" (did you mean {close!r}?)" if close else "") + ".")
    point = Point(point_name(overrides), overrides)
    if point.name in seen:
      raise ValueError(f"Sweep {path}: points {seen[point.name]} and {overrides} share the name "
                       f"{point.name!r}; every point must be distinct.")
    seen[point.name] = overrides
    points.append(point)
  return Sweep(os.path.abspath(path), arg, points)


# ----------------------------------------------------------------------------
# Point state, shared by the launchers and the report.
# ----------------------------------------------------------------------------


def read_point_state(point_dir) -> dict[str, Any]:
  try:
    return workdir_lib.read_json(workdir_lib.path(point_dir) / POINT_FILE, "the point's state")
  except (FileNotFoundError, workdir_lib.WorkdirError):
    return {}


def write_point_state(point_dir, state: Mapping[str, Any]) -> None:
  workdir_lib.write_json_atomic(workdir_lib.path(point_dir) / POINT_FILE, dict(state))


def run_finished(point_dir) -> bool:
  """True when the run trained every step and evaluated the last (it wrote done.json)."""
  done = workdir_lib.read_done(point_dir)
  return done is not None and done.get("step", -1) >= done.get("total_steps", 0)


def write_sweep_file(workdir, sweep: Sweep, spec: str, extra: Sequence[str]) -> None:
  workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json_atomic(workdir_lib.path(workdir) / SWEEP_FILE, {
      "sweep": spec, "path": sweep.path, "arg": sweep.arg, "extra_flags": list(extra),
      "points": [{"name": p.name, "overrides": p.overrides} for p in sweep.points]})


def read_sweep_file(workdir) -> dict[str, Any]:
  try:
    return workdir_lib.read_json(workdir_lib.path(workdir) / SWEEP_FILE, "the sweep's spec")
  except FileNotFoundError:
    return {}


if __name__ == "__main__":  # `python -m alexnet_jax.sweep`: the command line.
  from alexnet_jax import sweep_cli  # pylint: disable=g-import-not-at-top
  sweep_cli.run()
