"""Wall time of one 4-point sweep run sequentially and with --parallel=2, in one run.

    python benchmarks/sweep_parallel.py [--steps=60] [--json=FILE]

The sweep is the quickstart (small AlexNet on the offline digits) with ReLU/tanh
× LRN on/off, `--steps` steps per point. Each mode runs the real CLI
(`python -m alexnet_jax.sweep`) into a fresh directory; the script prints the
wall times, the ratios, and whether every point finished with the same final
eval accuracy as in the sequential run: `--parallel=2` (points share the
cores, computing exactly what the sequential run computes) and `--parallel=2
--pin_cpu_cores` (each point on its own core: XLA then sums in another order).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

SWEEP = """\
from alexnet_jax import config_lib, sweep

def get_config(arg=None):
  c = config_lib.load("quickstart")
  c.num_train_steps = {steps}
  c.eval_every_steps = {steps}
  c.log_every_steps = 20
  c.checkpoint_every_steps = {steps}
  return c

def get_sweep(arg=None):
  return sweep.product(sweep.axis("model.activation", ["relu", "tanh"]),
                       sweep.axis("model.lrn", [True, False]))
"""


def run(spec, workdir, *extra):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "alexnet_jax.sweep", f"--sweep={spec}",
                         f"--workdir={workdir}", "--no_report", *extra], cwd=REPO, env=env,
                        capture_output=True, text=True)
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise SystemExit(f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return wall, proc.stdout


def final_evals(workdir):
  sys.path.insert(0, str(REPO))
  from alexnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for point in sorted(p for p in pathlib.Path(workdir).iterdir() if p.is_dir()):
    evals = [r for r in workdir_lib.read_metrics(point) if "eval_top1" in r]
    if evals:
      out[point.name] = evals[-1]["eval_top1"]
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    spec = pathlib.Path(tmp) / "four_points.py"
    spec.write_text(textwrap.dedent(SWEEP.format(steps=args.steps)))
    # Build the digits dataset once, outside the timing.
    run(str(spec), pathlib.Path(tmp) / "warmup", "--only=model.activation=relu,model.lrn=True")
    results = {}
    modes = [("sequential", []), ("parallel=2", ["--parallel=2"]),
             ("parallel=2 pinned", ["--parallel=2", "--pin_cpu_cores"])]
    for mode, extra in modes:
      workdir = pathlib.Path(tmp) / mode
      wall, out = run(str(spec), workdir, *extra)
      results[mode] = {"wall_s": wall, "eval_top1": final_evals(workdir)}
      print(f"{mode}: {wall:.1f} s", flush=True)
  seq = results["sequential"]
  summary = {"machine": f"{len(os.sched_getaffinity(0))} cores", "steps_per_point": args.steps,
             "sequential_s": round(seq["wall_s"], 1), "eval_top1": seq["eval_top1"]}
  for mode in ("parallel=2", "parallel=2 pinned"):
    summary[mode] = {"wall_s": round(results[mode]["wall_s"], 1),
                     "speedup": round(seq["wall_s"] / results[mode]["wall_s"], 2),
                     "same_final_top1": results[mode]["eval_top1"] == seq["eval_top1"],
                     "eval_top1": results[mode]["eval_top1"]}
  print(json.dumps(summary, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
