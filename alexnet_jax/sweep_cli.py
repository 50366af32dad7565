"""`python -m alexnet_jax.sweep` (and `alexnet-sweep`): run a sweep, one of its points
(a SLURM array task) or its report. Sweep files and points: see `alexnet_jax.sweep`."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from alexnet_jax import sweep as sweep_lib
from alexnet_jax import sweep_launch
from alexnet_jax import sweep_report
from alexnet_jax import workdir as workdir_lib


def _parser():
  p = argparse.ArgumentParser(
      prog="python -m alexnet_jax.sweep",
      description="Run a config sweep (default), one of its points, or write its report.",
      epilog="Unrecognised --config.KEY=VALUE flags are passed to every point; "
             "--slurm.KEY=VALUE flags become #SBATCH --KEY=VALUE lines.")
  p.add_argument("command", nargs="?", default="run", choices=("run", "report", "run-point"))
  p.add_argument("--sweep", help="A shipped sweep's name or a sweep file, [:ARG] (run).")
  p.add_argument("--workdir", required=True, help="Sweep directory; each point gets DIR/NAME.")
  p.add_argument("--only", action="append", default=[],
                 help="Run only the point with this name (repeatable).")
  p.add_argument("--launcher", default="local", choices=("local", "slurm"))
  p.add_argument("--parallel", type=int, default=1,
                 help="local: points at once, each on its own GPUs or TPU chips (split "
                      "evenly); on a CPU the points share the cores")
  p.add_argument("--pin_cpu_cores", action="store_true",
                 help="with --parallel on a CPU: give each point its own share of the cores "
                      "(less contention, but XLA then sums in another order, so results "
                      "differ from a sequential run's in the last bits)")
  p.add_argument("--print_commands", action="store_true",
                 help="Print one training command per point instead of running them.")
  p.add_argument("--no_report", action="store_true", help="Do not write the report.")
  p.add_argument("--target_train_top1", type=float, default=0.75,
                 help="Report the first step whose training accuracy reached this.")
  p.add_argument("--name", help="run-point: the point to run.")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args, unknown = _parser().parse_known_args(argv)
  slurm = {u[len("--slurm."):].partition("=")[0]: u.partition("=")[2]
           for u in unknown if u.startswith("--slurm.")}
  extra = [u for u in unknown if u.startswith("--config.")]
  bad = [u for u in unknown if not u.startswith(("--config.", "--slurm."))]
  if bad:
    _parser().error(f"unrecognised arguments {bad}; only --config.KEY=VALUE and "
                    "--slurm.KEY=VALUE flags pass through.")
  if args.command == "report":
    path = sweep_report.write_report(args.workdir, target_train_top1=args.target_train_top1)
    print(workdir_lib.path(path).read_text())
    return 0
  if args.command == "run-point":
    if not args.name:
      _parser().error("run-point needs --name=POINT.")
    return sweep_launch.run_point(args.workdir, args.name)
  if not args.sweep:
    _parser().error("--sweep=SWEEP[:ARG] is required to run a sweep.")
  try:
    sweep = sweep_lib.load(args.sweep)
  except (FileNotFoundError, ValueError) as e:
    _parser().error(str(e))
  points = sweep.points
  if args.only:
    names = [p.name for p in points]
    missing = [o for o in args.only if o not in names]
    if missing:
      _parser().error(f"--only={missing[0]!r} is not a point of this sweep; its points are:\n  "
                      + "\n  ".join(names))
    points = [p for p in points if p.name in args.only]
  if args.print_commands:
    for point in points:
      print(shlex.join(sweep.command(point, args.workdir, extra)))
    return 0
  if args.launcher == "slurm":
    sweep_lib.write_sweep_file(args.workdir, sweep, args.sweep, extra)
    return sweep_launch.submit_slurm(sweep, points, args.workdir, slurm)
  workdir_lib.path(args.workdir).mkdir(parents=True, exist_ok=True)
  try:  # The lock: a second sweep on this workdir would fail every point it shares.
    with workdir_lib.Lock(args.workdir, command=f"sweep {args.sweep}"):
      sweep_lib.write_sweep_file(args.workdir, sweep, args.sweep, extra)
      code = sweep_launch.run_local(sweep, points, args.workdir, extra, parallel=args.parallel,
                                    pin_cpu_cores=args.pin_cpu_cores)
  except (workdir_lib.WorkdirError, ValueError) as e:  # locked; --parallel beyond the devices
    raise SystemExit(f"error: {e}") from None
  if not args.no_report and code < 128:
    try:
      print(f"[sweep] report: {sweep_report.write_report(args.workdir, target_train_top1=args.target_train_top1)}")
    except Exception as e:  # pylint: disable=broad-except  (a report must not mask the result)
      print(f"[sweep] could not write the report: {type(e).__name__}: {e}")
  return code


def run() -> None:
  """The `alexnet-sweep` command."""
  sys.exit(main())


if __name__ == "__main__":
  run()
