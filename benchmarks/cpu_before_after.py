"""Before/after table for the CPU work: the plain formulation vs `cpu_kernels`, each vs PyTorch.

"Before" is the same code with the CPU formulations off
(`--cpu_kernels=off`: flax's max pool, XLA's default YNNPACK convolutions),
"after" the default (`auto`: both CPU formulations). Every run is its own
process and times JAX and PyTorch interleaved, so the
JAX/PyTorch ratio is comparable across runs even on a machine other jobs
share; absolute images/s are not. `--cpus=1` runs pin the process to one core,
where CPU-seconds per step hardly depend on other jobs' load.

  python benchmarks/cpu_before_after.py [--variant=seed --batch_size=64 --repeats=2]

Prints a Markdown table (median over repeats) and the machine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"before": ["--cpu_kernels=off"], "after": []}


def run(kind, setting, args, cpus):
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [sys.executable, "benchmarks/jax_vs_torch.py", kind, f"--json={out.name}",
           f"--variant={args.variant}", f"--batch_size={args.batch_size}",
           f"--rounds={args.rounds}"] + SETTINGS[setting]
    if cpus:
      cmd.append(f"--cpus={cpus}")
    load = os.getloadavg()[0]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(out.name) as f:
      result = json.load(f)
  result["load_before"] = load
  print(f"  {kind:5} {setting:6} cpus={cpus or 'all'}: JAX {result['jax_images_per_sec']:.1f} "
        f"images/s, PyTorch {result['torch_images_per_sec']:.1f}, ratio "
        f"{result['ratio']:.2f}x, load {load:.1f}", flush=True)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="seed")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--cpus", default="all,1", help="comma list: all and/or a core count")
  args = parser.parse_args(argv)
  results = {}
  for repeat in range(args.repeats):
    print(f"repeat {repeat + 1}/{args.repeats}")
    for cpus in args.cpus.split(","):
      n = None if cpus == "all" else int(cpus)
      for kind in ("train", "eval"):
        for setting in ("before", "after"):
          results.setdefault((kind, setting, n), []).append(run(kind, setting, args, n))

  med = lambda rs, k: statistics.median(r[k] for r in rs)
  print(f"\n{args.variant}, batch {args.batch_size}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; median of {args.repeats} runs x {args.rounds} rounds\n")
  print("| step | cores | setting | JAX images/s | PyTorch images/s | JAX/PyTorch | load |")
  print("|---|---|---|---|---|---|---|")
  for (kind, setting, n), rs in results.items():
    loads = [r["load_before"] for r in rs]
    print(f"| {kind} | {n or os.cpu_count()} | {setting} | {med(rs, 'jax_images_per_sec'):.1f} | "
          f"{med(rs, 'torch_images_per_sec'):.1f} | {med(rs, 'ratio'):.2f}x | "
          f"{min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
  main()
