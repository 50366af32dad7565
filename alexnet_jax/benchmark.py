"""Throughput of the real steps and of the input pipelines that feed them.

  python -m alexnet_jax.benchmark train|eval [--variant=seed --batch_size=64]
  python -m alexnet_jax.benchmark pipeline [--data_dir=FOLDER] [--variant=seed]
  python -m alexnet_jax.benchmark gpu [--data_dir=PREPARED] [--smoke]

`train` / `eval` time the project's own jitted steps (`steps.make_train_step`
/ `make_eval_step`, compiled ahead of time as training does) on a batch that
stays on the device: what training gets, minus input.

`pipeline` compares the two ways to feed the train step from the same
photos: the JPEG pipeline (decode + crop + flip on the host, tf.data) and a
prepared dataset (the folder converted once by `alexnet_jax.prepare`; the host
copies uint8 bytes, crops happen on the device). It reports host CPU-seconds
per image and images/s per core for each, then trains the step end to end
from prepared data and from fake data kept on the device: the two must be
within a few percent for the input to count as free.

`gpu` is the accelerator table: bf16 images/s and model FLOP utilisation
(forward MACs x 2 x 3 per image, over the card's dense bf16 peak) for `paper`
and `torchvision` at batch 128..1024, then the host's input supply per core
and, with `--data_dir=PREPARED`, an end-to-end row that says whether the
input keeps up. `--smoke` runs it tiny on any backend.

PyTorch comparisons live outside the library: benchmarks/jax_vs_torch.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import resource
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Dense bf16 tensor-core peaks (FLOP/s) by device-kind substring, most specific first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("H200", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),  # v5e / v5 lite
    ("TPU v4", 275e12),
)
SHIPPED_PHOTOS = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "flowers"


def peak_bf16_flops(device_kind: str):
  """(peak FLOP/s, matched name) for a device kind, or (None, None) if unknown."""
  for name, peak in PEAK_BF16_FLOPS:
    if name.lower() in device_kind.lower():
      return peak, name
  return None, None


def cpu_seconds() -> float:
  """User + system CPU time of this process so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def make_config(variant, batch_size, image_size=None, *, cpu_kernels="auto",
                half_precision="auto", num_classes=1000):
  from alexnet_jax import config_lib, models  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.model.variant = variant
  c.model.cpu_kernels = cpu_kernels
  c.image_size = image_size or models.default_image_size(variant)
  c.resize_size = max(c.resize_size, c.image_size)
  c.batch_size = c.eval_batch_size = batch_size
  c.eval_crops = 1
  c.num_classes = num_classes
  c.half_precision = half_precision
  c.dataset = "fake"
  c.log_every_steps = 1 << 30
  return c


class TrainStep:
  """The real train step on a 1-device mesh, compiled ahead of time."""

  def __init__(self, config, device=None, *, state=None, stored_size=None):
    import jax  # pylint: disable=g-import-not-at-top
    from alexnet_jax import config_lib, optim, parallel, steps  # pylint: disable=g-import-not-at-top
    from alexnet_jax.data import device_augment  # pylint: disable=g-import-not-at-top
    self.mesh = parallel.create_mesh([device or jax.devices()[0]])
    model = config_lib.create_model(config, config.num_classes)
    tx = optim.create_optimizer(config)
    augment = device_augment.train_fn(config) if stored_size else None
    step = steps.make_train_step(model, tx, optim.create_learning_rate_fn(config, 1000), config,
                                 self.mesh, device_augment=augment)
    start = time.perf_counter()
    self.compiled = step.lower(
        steps.abstract_train_state(model, tx, config, self.mesh), steps.abstract_window(self.mesh),
        steps.abstract_batch(config, self.mesh, stored_size=stored_size)).compile()
    self.compile_s = time.perf_counter() - start
    self.memory_mib = _xla_memory_mib(self.compiled)
    self.state = state if state is not None else steps.create_train_state(model, tx, config,
                                                                           self.mesh)
    self.window = parallel.replicate(steps.empty_window(), self.mesh)

  def run(self, batches, count: int) -> float:
    """Seconds per step over `count` steps fed from `batches` (device arrays)."""
    import jax  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    for _ in range(count):
      self.state, self.window = self.compiled(self.state, self.window, next(batches))
    jax.block_until_ready(self.window)
    return (time.perf_counter() - start) / count


class EvalStep:
  def __init__(self, config, device=None):
    import jax  # pylint: disable=g-import-not-at-top
    from alexnet_jax import config_lib, models, parallel, steps  # pylint: disable=g-import-not-at-top
    self.mesh = parallel.create_mesh([device or jax.devices()[0]])
    model = config_lib.create_model(config, config.num_classes)
    step = steps.make_eval_step(model, config, self.mesh)
    sharding = parallel.replicated(self.mesh)
    init = lambda: models.init_params(model, config.image_size, jax.random.key(0))
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            jax.eval_shape(init))
    start = time.perf_counter()
    self.compiled = step.lower(abstract, steps.abstract_batch(config, self.mesh, eval_batch=True),
                               steps.abstract_eval_totals(self.mesh)).compile()
    self.totals = lambda: steps.eval_totals(self.mesh)
    self.compile_s = time.perf_counter() - start
    self.memory_mib = _xla_memory_mib(self.compiled)
    self.params = jax.jit(init, out_shardings=sharding)()

  def run(self, batches, count: int) -> float:
    import jax  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    totals = self.totals()
    for _ in range(count):
      totals = self.compiled(self.params, next(batches), totals)
    jax.block_until_ready(totals)
    return (time.perf_counter() - start) / count


def _xla_memory_mib(compiled):
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    return None
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes) / 2**20


def _device_peak_mib(device):
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def _fake_batches(config, mesh, eval_batch=False):
  """Device-resident fake batches, the `fake` dataset's own (no host work per step)."""
  from alexnet_jax import data, parallel  # pylint: disable=g-import-not-at-top
  make = data.create_eval_iterator if eval_batch else data.create_train_iterator
  it = make(config, process_index=0, process_count=1)
  return parallel.prefetch_to_mesh(_repeat(it) if eval_batch else it, mesh)


def _repeat(iterator):
  batches = list(iterator)
  while True:
    yield from batches


# --------------------------------------------------------------------------
# Subcommands.
# --------------------------------------------------------------------------


def bench_step(kind, config, *, steps, rounds):
  import jax  # pylint: disable=g-import-not-at-top
  step = TrainStep(config) if kind == "train" else EvalStep(config)
  batches = _fake_batches(config, step.mesh, eval_batch=kind == "eval")
  step.run(batches, steps)  # warm-up
  per_step = statistics.median(step.run(batches, steps) for _ in range(rounds))
  out = {"kind": kind, "variant": config.model.variant, "batch_size": config.batch_size,
         "image_size": config.image_size, "backend": jax.default_backend(),
         "images_per_sec": config.batch_size / per_step, "step_ms": 1e3 * per_step,
         "compile_s": step.compile_s, "xla_memory_mib": step.memory_mib,
         "cpu_kernels": config.model.cpu_kernels}
  print(f"{kind}: {config.model.variant}, batch {config.batch_size} at {config.image_size}px on "
        f"{out['backend']}: {out['images_per_sec']:.1f} images/s ({out['step_ms']:.0f} ms/step, "
        f"median of {rounds} rounds; compile {step.compile_s:.1f}s)", flush=True)
  return out


def host_pipeline_cost(config, *, batches: int, warmup: int = 2) -> dict:
  """Host CPU-seconds per image and images/s of config's training input pipeline.

  CPU time is the whole process's (every thread), so it is what the pipeline
  costs the host, whatever the core count.
  """
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  it = data.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(warmup):
    next(it)
  images, wall0, cpu0 = 0, time.perf_counter(), cpu_seconds()
  for _ in range(batches):
    images += next(it)["image"].shape[0]
  wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
  cores = data.available_cores()
  return {"images": images, "cpu_seconds_per_image": cpu / images,
          "images_per_cpu_second": images / cpu, "images_per_sec": images / wall,
          "cores": cores}


def _prepared_copy(config, folder, workdir):
  from alexnet_jax import prepare  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  c.dataset, c.data_dir = "imagefolder", str(folder)
  prepare.prepare(c, workdir)
  return workdir


def bench_pipeline(args):
  """JPEG pipeline vs prepared data, host cost and end-to-end training, on one folder."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(args.data_dir or SHIPPED_PHOTOS)
  config = make_config(args.variant, args.batch_size, args.image_size,
                       cpu_kernels=args.cpu_kernels, num_classes=None)
  config.dataset, config.data_dir = "imagefolder", str(folder)
  train_images = data.dataset_info(config).num_train_examples
  if config.batch_size > train_images:  # The shipped test photos hold 15.
    config.batch_size = config.eval_batch_size = train_images
    print(f"batch size {train_images}: all the training images of {folder}")
  with tempfile.TemporaryDirectory() as tmp:
    prepared_dir = args.prepared_dir or _prepared_copy(config, folder, pathlib.Path(tmp) / "p")
    rows = {}
    for augmentation in args.augmentation.split(","):
      config.augmentation = augmentation
      rows[f"jpeg {augmentation}"] = host_pipeline_cost(config, batches=args.batches)
    prepared = config.copy_and_resolve_references()
    prepared.dataset, prepared.data_dir = "prepared", str(prepared_dir)
    rows["prepared"] = host_pipeline_cost(prepared, batches=args.batches * 4)
    print(f"host input cost, {folder} at {config.image_size}px, batch {config.batch_size}, "
          f"{rows['prepared']['cores']} cores, load {os.getloadavg()[0]:.1f}:")
    for name, r in rows.items():
      print(f"  {name:<16} {1e6 * r['cpu_seconds_per_image']:8.0f} us CPU/image = "
            f"{r['images_per_cpu_second']:7.0f} images per CPU-second (per core)")
    base = min(r["cpu_seconds_per_image"] for n, r in rows.items() if n.startswith("jpeg"))
    ratio = base / rows["prepared"]["cpu_seconds_per_image"]
    print(f"  prepared data costs the host {ratio:.1f}x fewer CPU-seconds per image than the "
          "cheapest JPEG pipeline")
    end_to_end = {}
    if args.train_steps:
      fake = config.copy_and_resolve_references()
      fake.dataset, fake.num_classes = "fake", 5
      prepared.num_classes = 5
      end_to_end = _end_to_end(fake, prepared, steps=args.train_steps, rounds=args.rounds)
  return {"folder": str(folder), "hosts": rows, "cpu_ratio": ratio,
          "device": jax.devices()[0].device_kind, "end_to_end": end_to_end}


def _end_to_end(fake, prepared, *, steps, rounds):
  """Train-step images/s fed from fake data on the device vs from prepared data.

  A third feed repeats a few prepared batches already on the device: the same
  step with the same device-side augmentation and no host input at all, so
  `prepared / prepared_resident` is what reading from the host costs, apart
  from what the augmentation costs the device.
  """
  from alexnet_jax import data, parallel  # pylint: disable=g-import-not-at-top
  info = data.dataset_info(prepared)
  runs = {"fake": TrainStep(fake), "prepared": TrainStep(prepared, stored_size=info.stored_size)}
  runs["prepared_resident"] = TrainStep(prepared, stored_size=info.stored_size)

  def prepared_batches():
    return parallel.prefetch_to_mesh(
        data.create_train_iterator(prepared, process_index=0, process_count=1),
        runs["prepared"].mesh)

  resident = list(itertools.islice(prepared_batches(), 4))
  feeds = {"fake": _fake_batches(fake, runs["fake"].mesh), "prepared": prepared_batches(),
           "prepared_resident": itertools.cycle(resident)}
  times = {name: [] for name in runs}
  for name in runs:
    runs[name].run(feeds[name], 2)  # warm-up
  for _ in range(rounds):  # Interleaved, so both see the same machine load.
    for name in runs:
      times[name].append(runs[name].run(feeds[name], steps))
  ips = {name: fake.batch_size / statistics.median(t) for name, t in times.items()}
  out = {f"{name}_images_per_sec": v for name, v in ips.items()}
  out["prepared_vs_fake"] = ips["prepared"] / ips["fake"]
  out["prepared_vs_resident"] = ips["prepared"] / ips["prepared_resident"]
  print(f"end to end, {fake.model.variant} at {fake.image_size}px, batch {fake.batch_size}: "
        f"fake data {ips['fake']:.1f} images/s, prepared data {ips['prepared']:.1f} images/s "
        f"({100 * out['prepared_vs_fake']:.1f}% of fake; median of {rounds} rounds); "
        f"the same prepared batches kept on the device {ips['prepared_resident']:.1f} images/s, "
        f"so reading from the host keeps {100 * out['prepared_vs_resident']:.1f}% of the "
        f"step's speed", flush=True)
  return out


def bench_gpu(args):
  """bf16 images/s and MFU for paper/torchvision over batch sizes, in bounded time."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  kind = device.device_kind
  peak, matched = peak_bf16_flops(kind)
  if args.peak_tflops:
    peak, matched = args.peak_tflops * 1e12, "--peak_tflops"
  size = args.image_size
  print(f"device: {kind} ({jax.default_backend()}); dense bf16 peak: "
        + (f"{peak / 1e12:.0f} TFLOP/s ({matched})" if peak else "unknown (pass --peak_tflops)"))
  start, rows = time.perf_counter(), []
  print(f"{'variant':<12} {'batch':>6} {'images/s':>10} {'ms/step':>8} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'compile s':>9} {'XLA MiB':>8}")
  for variant in args.variants.split(","):
    flops_per_image = 3 * 2 * models.forward_macs(variant, image_size=size)
    state = None  # one initialisation per variant, reused across batch sizes
    for b in [int(b) for b in args.batch_sizes.split(",")]:
      if time.perf_counter() - start > args.budget_s:
        print(f"{variant:<12} {b:>6}  skipped: time budget {args.budget_s:.0f}s spent")
        continue
      config = make_config(variant, b, size, half_precision=not args.fp32)
      try:
        step = TrainStep(config, device, state=state)
        batches = _fake_batches(config, step.mesh)
        step.run(batches, args.warmup_steps)
        per_step = statistics.median(step.run(batches, args.steps) for _ in range(args.rounds))
      except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory)
        print(f"{variant:<12} {b:>6}  failed: {type(e).__name__}: {str(e)[:200]}")
        state = None  # it may have been donated to the failed step
        continue
      ips = b / per_step
      achieved = ips * flops_per_image
      mfu = achieved / peak if peak else None
      rows.append(dict(variant=variant, batch_size=b, images_per_sec=ips, step_ms=1e3 * per_step,
                       tflops=achieved / 1e12, mfu=mfu, compile_s=step.compile_s,
                       xla_memory_mib=step.memory_mib))
      print(f"{variant:<12} {b:>6} {ips:>10.0f} {1e3 * per_step:>8.1f} {achieved / 1e12:>8.1f} "
            + (f"{100 * mfu:>5.1f}%" if mfu is not None else f"{'n/a':>6}")
            + f" {step.compile_s:>9.1f} "
            + (f"{step.memory_mib:>8.0f}" if step.memory_mib else f"{'n/a':>8}"), flush=True)
      state = step.state
      del step
  result = {"device": kind, "peak_flops": peak, "rows": rows}
  if args.pipeline_batches and rows:
    best = max(r["images_per_sec"] for r in rows)
    result["pipeline"] = _supply_vs_demand(args, best)
  peak_mib = _device_peak_mib(device)
  if peak_mib is not None:
    print(f"device memory peak over the whole run: {peak_mib:.0f} MiB")
  print(f"total {time.perf_counter() - start:.0f}s; MFU = images/s x 6 x forward MACs "
        f"(models.forward_macs, {size}px) / peak; {'fp32' if args.fp32 else 'bf16'} compute, "
        "fp32 params; batch resident on the device.")
  return result


def _supply_vs_demand(args, best_ips):
  """Host input supply (per core, x this host's cores) against the fastest step."""
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  cores = data.available_cores()
  config = make_config(args.variants.split(",")[0], 256, args.image_size, num_classes=None)
  supply = {}
  if args.data_dir:
    from alexnet_jax.data import prepared  # pylint: disable=g-import-not-at-top
    manifest = prepared.read_manifest(args.data_dir)
    config.dataset, config.data_dir = "prepared", args.data_dir
    config.resize_size, config.eval_resize = manifest["image_size"], manifest["eval_resize"]
    config.image_size = min(config.image_size, config.resize_size)
  else:
    config.dataset, config.data_dir = "imagefolder", str(SHIPPED_PHOTOS)
    config.batch_size = 8
  cost = host_pipeline_cost(config, batches=args.pipeline_batches)
  supply = {"source": config.dataset, "images_per_cpu_second": cost["images_per_cpu_second"],
            "cores": cores, "host_supply_images_per_sec": cost["images_per_cpu_second"] * cores,
            "step_images_per_sec": best_ips}
  supply["keeps_up"] = supply["host_supply_images_per_sec"] >= best_ips
  print(f"input: {config.dataset} costs {1e6 / cost['images_per_cpu_second']:.0f} us of host CPU "
        f"per image: {cores} cores supply {supply['host_supply_images_per_sec']:.0f} images/s "
        f"against the step's {best_ips:.0f}: "
        + ("keeps up" if supply["keeps_up"] else "does NOT keep up"), flush=True)
  return supply


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _parser():
  p = argparse.ArgumentParser(prog="python -m alexnet_jax.benchmark",
                              description=__doc__.split("\n")[0])
  p.add_argument("--json", default=None, help="also write the results to this JSON file")
  sub = p.add_subparsers(dest="command", required=True)

  def common(q, batch=64):
    q.add_argument("--variant", default="seed", help="paper | torchvision | seed | small")
    q.add_argument("--batch_size", type=int, default=batch)
    q.add_argument("--image_size", type=int, default=None, help="default: the variant's")
    q.add_argument("--cpu_kernels", default="auto", help="model.cpu_kernels: auto | on | off")

  for name in ("train", "eval"):
    q = sub.add_parser(name, help=f"{name} step images/s")
    common(q)
    q.add_argument("--steps", type=int, default=2, help="steps per timed round")
    q.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
  q = sub.add_parser("pipeline", help="JPEG vs prepared input: host cost and end to end")
  common(q)
  q.add_argument("--data_dir", default=None, help="image folder (default: the test photos)")
  q.add_argument("--prepared_dir", default=None,
                 help="its prepared copy (default: prepared into a temporary directory)")
  q.add_argument("--augmentation", default="paper,inception")
  q.add_argument("--batches", type=int, default=20, help="JPEG batches timed per pipeline")
  q.add_argument("--train_steps", type=int, default=4,
                 help="steps per round of the end-to-end comparison (0: skip it)")
  q.add_argument("--rounds", type=int, default=3)
  q = sub.add_parser("gpu", help="bf16 images/s and MFU, paper/torchvision, batch 128..1024")
  q.add_argument("--variants", default="paper,torchvision")
  q.add_argument("--batch_sizes", default="128,256,512,1024")
  q.add_argument("--image_size", type=int, default=224)
  q.add_argument("--steps", type=int, default=10)
  q.add_argument("--rounds", type=int, default=3)
  q.add_argument("--warmup_steps", type=int, default=3)
  q.add_argument("--budget_s", type=float, default=360.0,
                 help="stop starting new configurations after this many seconds")
  q.add_argument("--peak_tflops", type=float, default=None, help="override the peak")
  q.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 compute")
  q.add_argument("--data_dir", default=None,
                 help="a prepared dataset: measure its host cost against the best step")
  q.add_argument("--pipeline_batches", type=int, default=20,
                 help="input batches timed after the table (0: skip)")
  q.add_argument("--smoke", action="store_true",
                 help="tiny run (batch 2,4 at 96px unless given, 1 step) to check the script")
  return p


def main(argv=None):
  args = _parser().parse_args(argv)
  result = _run(args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1, default=float)
  return result


def _run(args):
  if args.command == "gpu":
    if args.smoke:
      defaults = _parser().parse_args(["gpu"])
      if args.batch_sizes == defaults.batch_sizes:
        args.batch_sizes = "2,4"
      if args.image_size == defaults.image_size:
        args.image_size = 96
      args.steps, args.rounds, args.warmup_steps = 1, 1, 1
      args.pipeline_batches = min(args.pipeline_batches, 2)
    return bench_gpu(args)
  if args.command == "pipeline":
    return bench_pipeline(args)
  config = make_config(args.variant, args.batch_size, args.image_size,
                       cpu_kernels=args.cpu_kernels)
  return bench_step(args.command, config, steps=args.steps, rounds=args.rounds)


if __name__ == "__main__":
  main()
