"""The real JAX train/eval steps beside the same network in PyTorch, in one process.

  python benchmarks/jax_vs_torch.py train|eval [--variant=seed --batch_size=64]
      [--rounds=5 --steps=2 --cpu_kernels=auto --cpus=N --json=FILE]

Rounds alternate JAX and PyTorch (A, B, A, B, ...) so both see the same
machine load; figures are medians over rounds after a warm-up. JAX gets uint8
NHWC batches and normalises inside its step, as training does; PyTorch gets
float NCHW batches already normalised (what its DataLoader would hand it).
Both train with SGD, momentum 0.9, coupled weight decay 5e-4.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _cores():
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def compare(kind, variant, batch_size, *, rounds, steps, cpu_kernels="auto"):
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import throughput as benchmark  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_alexnet  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(_cores())
  cpu = benchmark.cpu_info()
  benchmark.print_cpu(cpu)
  config = benchmark.make_config(variant, batch_size, cpu_kernels=cpu_kernels,
                                 half_precision=False)
  jax_step = benchmark.TrainStep(config) if kind == "train" else benchmark.EvalStep(config)
  feed = benchmark._fake_batches(config, jax_step.mesh, eval_batch=kind == "eval")  # pylint: disable=protected-access
  torch_step = (torch_alexnet.TrainStep if kind == "train" else torch_alexnet.EvalStep)(config)
  jax_step.run(feed, steps)
  torch_step.run(steps)
  times = {"jax": [], "torch": []}
  for _ in range(rounds):
    times["jax"].append(jax_step.run(feed, steps))
    times["torch"].append(torch_step.run(steps))
  jax_ips = batch_size / statistics.median(times["jax"])
  torch_ips = batch_size / statistics.median(times["torch"])
  result = {"kind": kind, "variant": variant, "batch_size": batch_size,
            "jax_images_per_sec": jax_ips, "torch_images_per_sec": torch_ips,
            "ratio": jax_ips / torch_ips, "cpu_kernels": cpu_kernels, "cores": _cores(),
            "round_ratios": [t / j for j, t in zip(times["jax"], times["torch"])],
            "load": os.getloadavg()[0], "cpu": cpu["model"],
            "avx512": any(f.startswith("avx512") for f in cpu["flags"]),
            "amx": any(f.startswith("amx") for f in cpu["flags"]),
            "torch_mkldnn": torch.backends.mkldnn.is_available()}
  print(f"{kind}: {variant}, batch {batch_size}, {_cores()} cores, load {result['load']:.1f}: "
        f"JAX {jax_ips:.1f} images/s, PyTorch {torch_ips:.1f} images/s, JAX/PyTorch "
        f"{result['ratio']:.2f}x (rounds {min(result['round_ratios']):.2f}.."
        f"{max(result['round_ratios']):.2f})", flush=True)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("kind", choices=("train", "eval"))
  parser.add_argument("--variant", default="seed")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--cpu_kernels", default="auto")
  parser.add_argument("--cpus", type=int, default=None,
                      help="pin to this many cores first (1: a load-robust comparison)")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.cpus:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cpus])
  result = compare(args.kind, args.variant, args.batch_size, rounds=args.rounds, steps=args.steps,
                   cpu_kernels=args.cpu_kernels)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
