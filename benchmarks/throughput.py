"""Throughput of the real steps and of the input pipelines that feed them.

  python benchmarks/throughput.py train|eval [--variant=seed --batch_size=64]
  python benchmarks/throughput.py pipeline [--data_dir=FOLDER] [--variant=seed]
  python benchmarks/throughput.py gpu [--data_dir=PREPARED] [--out=PREFIX] [--smoke]

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

`gpu` is the first-run script for an accelerator: the train step alone (bf16
images/s, model FLOP utilisation = forward MACs x 2 x 3 per image over the
`device_kind`'s dense bf16 peak, compile time, memory) for `paper` and
`torchvision` at batch 256 and 1024; then the prepared reader's measured wall
images/s, cold (shard files dropped from the page cache) and hot, with its
thread count; then prepared data -> device -> step next to the step alone.
The verdict compares the reader's wall rate with what the host's devices
consume. Without `--data_dir` it writes random photos as JPEGs and prepares
them with the real `prepare`, so the input rows read real bytes. Writes
`--out`.json and `--out`.md. `--smoke` runs it tiny on any backend.

PyTorch comparisons: benchmarks/jax_vs_torch.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Dense bf16 peaks (FLOP/s) by device_kind substring, most specific first. TPU v5p chips
# report "TPU v5", v5e "TPU v5 lite", v6e "TPU v6 lite".
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM / HBM3
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("TPU v6", 918e12),  # v6e
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),  # v5p
    ("TPU v4", 275e12),
)


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
  config = make_config(args.variant, args.batch_size, args.image_size,
                       cpu_kernels=args.cpu_kernels, num_classes=None)
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(args.data_dir or synthetic_folder(
        pathlib.Path(tmp) / "photos", train=4 * config.batch_size, size=config.resize_size))
    config.dataset, config.data_dir = "imagefolder", str(folder)
    train_images = data.dataset_info(config).num_train_examples
    if config.batch_size > train_images:
      config.batch_size = config.eval_batch_size = train_images
      print(f"batch size {train_images}: all the training images of {folder}")
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
      fake.dataset = "fake"
      fake.num_classes = prepared.num_classes = data.dataset_info(config).num_classes
      end_to_end = _end_to_end(prepared, steps=args.train_steps, rounds=args.rounds,
                               fake=fake)
  return {"folder": str(folder), "hosts": rows, "cpu_ratio": ratio,
          "device": jax.devices()[0].device_kind, "end_to_end": end_to_end}


def _end_to_end(prepared, *, steps, rounds, fake=None):
  """Train-step images/s fed from prepared data: host -> device -> step.

  The same compiled step also runs on a few of those batches kept on the device: the
  same device-side augmentation and no host input, so `prepared / prepared_resident`
  is what reading from the host costs. Given `fake`, a third run feeds fake data
  already on the device (no augmentation).
  """
  from alexnet_jax import data, parallel  # pylint: disable=g-import-not-at-top
  step = TrainStep(prepared, stored_size=data.dataset_info(prepared).stored_size)
  fed = parallel.prefetch_to_mesh(
      data.create_train_iterator(prepared, process_index=0, process_count=1), step.mesh)
  runs = {"prepared": (step, fed),
          "prepared_resident": (step, itertools.cycle([next(fed) for _ in range(4)]))}
  if fake is not None:
    fake_step = TrainStep(fake)
    runs["fake"] = (fake_step, _fake_batches(fake, fake_step.mesh))
  times = {name: [] for name in runs}
  for run, feed in runs.values():
    run.run(feed, 2)  # warm-up
  for _ in range(rounds):  # Interleaved, so all see the same machine load.
    for name, (run, feed) in runs.items():
      times[name].append(run.run(feed, steps))
  ips = {name: prepared.batch_size / statistics.median(t) for name, t in times.items()}
  out = {f"{name}_images_per_sec": v for name, v in ips.items()}
  out["prepared_vs_resident"] = ips["prepared"] / ips["prepared_resident"]
  print(f"end to end, {prepared.model.variant} at {prepared.image_size}px, batch "
        f"{prepared.batch_size}: prepared data -> device -> step {ips['prepared']:,.1f} "
        f"images/s; the same step on prepared batches kept on the device "
        f"{ips['prepared_resident']:,.1f} (reading from the host keeps "
        f"{100 * out['prepared_vs_resident']:.1f}%; median of {rounds} rounds)", flush=True)
  if fake is not None:
    out["prepared_vs_fake"] = ips["prepared"] / ips["fake"]
    print(f"  fake data on the device {ips['fake']:,.1f} images/s: prepared data runs at "
          f"{100 * out['prepared_vs_fake']:.1f}% of it", flush=True)
  return out


def cpu_info() -> dict:
  """The host CPU's model and flags (/proc/cpuinfo; `platform` where there is none)."""
  import platform  # pylint: disable=g-import-not-at-top
  info = {"model": platform.processor() or platform.machine(), "flags": []}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model") and value:
          info["model"] = value
        elif key in ("flags", "Features") and not info["flags"]:
          info["flags"] = value.split()
  except OSError:
    pass
  return info


def print_cpu(info: dict) -> None:
  simd = [f for f in info["flags"] if f.startswith(("avx", "amx", "fma", "sse4", "asimd", "sve"))]
  print(f"CPU: {info['model']}; SIMD flags: {' '.join(simd) or 'none listed'}", flush=True)


def verdict(demand: float, hot: float, cold: float | None = None) -> tuple[bool, str]:
  """Whether the reader keeps up: its measured wall images/s against the devices' demand."""
  if hot < demand:
    return False, (f"the input does NOT keep up: the reader delivers {hot:,.0f} images/s from "
                   f"the page cache, the devices consume {demand:,.0f}")
  if cold is not None and cold < demand:
    return True, (f"the input keeps up from the page cache only ({hot:,.0f} images/s against "
                  f"{demand:,.0f}); from disk it delivers {cold:,.0f}")
  return True, f"the input keeps up: {hot:,.0f} images/s against {demand:,.0f}"


def synthetic_folder(root, *, train: int, size: int, classes: int = 4, seed: int = 0):
  """An image folder of `train` random photos (+ 2 per class in val/), as JPEGs of about
  size x 4/3 size: smooth random colour fields with noise, so they decode like photos."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  for split, n in (("train", train), ("val", 2 * classes)):
    for i in range(n):
      folder = root / split / f"class{i % classes}"
      folder.mkdir(parents=True, exist_ok=True)
      h, w = size + int(rng.integers(0, 16)), size * 4 // 3
      field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8)).resize((w, h))
      noise = rng.integers(-12, 13, (h, w, 3))
      pixels = np.clip(np.asarray(field, np.int16) + noise, 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
  return root


def prepared_config(data_dir, batch_size, *, image_size=None, workers=0):
  """A training config reading the prepared dataset `data_dir` as stored."""
  from alexnet_jax.data import prepared  # pylint: disable=g-import-not-at-top
  manifest = prepared.read_manifest(data_dir)
  stored = int(manifest["image_size"])
  c = make_config("paper", batch_size, min(image_size or stored, stored),
                  num_classes=len(manifest["class_names"]))
  c.dataset, c.data_dir, c.input_workers = "prepared", str(data_dir), workers
  c.resize_size, c.eval_resize = stored, manifest["eval_resize"]
  return c


def drop_page_cache(data_dir, split="train") -> bool:
  """Drops a local prepared split's image files from the page cache (posix_fadvise)."""
  from alexnet_jax.data import prepared  # pylint: disable=g-import-not-at-top
  if "://" in str(data_dir) or not hasattr(os, "posix_fadvise"):
    return False
  for shard in prepared.read_manifest(data_dir)["splits"][split]["shards"]:
    fd = os.open(os.path.join(data_dir, shard["images"]), os.O_RDONLY)
    try:
      os.fsync(fd)  # Dirty pages (a set just written) cannot be dropped.
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)
  return True


def reader_rates(config, *, batches: int) -> dict:
  """Wall images/s of the prepared training reader, from the iterator's creation to its
  last batch: cold after `drop_page_cache`, over at most one epoch so that every read
  misses; then hot, the same batches again (`batches` of them once the cold pass has
  read the whole split)."""
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  epoch = max(1, data.dataset_info(config).num_train_examples // config.batch_size)
  counts = {"cold": min(batches, epoch)}
  counts["hot"] = batches if counts["cold"] == epoch else counts["cold"]
  out = {"batch_size": config.batch_size, "cold_images_per_sec": None}
  for mode, count in counts.items():
    timed = mode == "hot" or drop_page_cache(config.data_dir)  # Else the pass only warms.
    start = time.perf_counter()
    it = data.create_train_iterator(config, process_index=0, process_count=1)
    for _ in range(count):
      next(it)
    wall = time.perf_counter() - start
    it.close()
    out["workers"] = it.workers
    if timed:
      out[f"{mode}_images_per_sec"] = count * config.batch_size / wall
  return out


def bench_gpu(args):
  """The step alone per variant and batch size, the reader, end to end, and a verdict."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import data, models  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  kind = device.device_kind
  peak, matched = peak_bf16_flops(kind)
  if args.peak_tflops:
    peak, matched = args.peak_tflops * 1e12, "--peak_tflops"
  size, batch_sizes = args.image_size, [int(b) for b in args.batch_sizes.split(",")]
  cpu = cpu_info()
  print(f"device: {kind} ({jax.default_backend()}, {jax.local_device_count()} local); dense "
        "bf16 peak: " + (f"{peak / 1e12:.0f} TFLOP/s ({matched})" if peak else
                         "unknown (pass --peak_tflops)"))
  start, rows = time.perf_counter(), []
  print(f"{'variant':<12} {'batch':>6} {'images/s':>10} {'ms/step':>8} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'compile s':>9} {'XLA MiB':>8}")
  for variant in args.variants.split(","):
    flops_per_image = 3 * 2 * models.forward_macs(variant, image_size=size)
    state = None  # one initialisation per variant, reused across batch sizes
    for b in batch_sizes:
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
  result = {"device": kind, "backend": jax.default_backend(), "peak_flops": peak,
            "peak_from": matched, "cpu": cpu, "image_size": size,
            "compute": "fp32" if args.fp32 else "bf16", "rows": rows,
            "device_peak_mib": _device_peak_mib(device)}
  with tempfile.TemporaryDirectory(dir=args.scratch_dir) as tmp:
    data_dir = args.data_dir
    if not data_dir:  # Random photos, JPEG-encoded, through the real `prepare`.
      c = make_config("paper", 1, size, num_classes=None)
      c.dataset, c.resize_size = "imagefolder", args.resize_size or size * 8 // 7
      c.data_dir = str(synthetic_folder(pathlib.Path(tmp) / "photos", size=c.resize_size,
                                        train=args.synthetic_images or 4 * max(batch_sizes)))
      data_dir = _prepared_copy(c, c.data_dir, pathlib.Path(tmp) / "prepared")
    result.update(_input_rows(args, data_dir, rows, max(batch_sizes)))
  result["total_s"] = time.perf_counter() - start
  print(f"total {result['total_s']:.0f}s; MFU = images/s x 6 x forward MACs "
        f"(models.forward_macs, {size}px) / peak; {result['compute']} compute, fp32 params; "
        "the step alone reads a batch resident on the device.")
  print_cpu(cpu)
  return result


def _input_rows(args, data_dir, rows, batch_size):
  """The reader's wall rates, the verdict and the end-to-end row for prepared `data_dir`."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  config = prepared_config(data_dir, batch_size, image_size=args.image_size,
                           workers=args.workers)
  info = data.dataset_info(config)
  config.batch_size = config.eval_batch_size = min(batch_size, info.num_train_examples)
  reader = reader_rates(config, batches=args.reader_batches)
  reader.update(data_dir=args.data_dir or "synthetic", num_examples=info.num_train_examples,
                stored_size=info.stored_size)
  cold, hot = reader["cold_images_per_sec"], reader["hot_images_per_sec"]
  print(f"reader: {reader['data_dir']} ({info.num_train_examples} images at "
        f"{info.stored_size}px), batch {config.batch_size}, {reader['workers']} threads, wall: "
        f"cold {'n/a (not local)' if cold is None else f'{cold:,.0f}'}, hot {hot:,.0f} images/s")
  out = {"reader": reader}
  if not rows:
    return out
  best, devices = max(rows, key=lambda r: r["images_per_sec"]), jax.local_device_count()
  keeps_up, text = verdict(best["images_per_sec"] * devices, hot, cold)
  out["verdict"] = {"keeps_up": keeps_up, "text": text, "local_devices": devices,
                    "demand_images_per_sec": best["images_per_sec"] * devices, "step": best}
  if args.end_to_end_steps:
    config.model.variant, config.half_precision = best["variant"], not args.fp32
    config.batch_size = config.eval_batch_size = min(best["batch_size"], info.num_train_examples)
    e2e = _end_to_end(config, steps=args.end_to_end_steps, rounds=args.rounds)
    e2e.update(variant=best["variant"], batch_size=config.batch_size,
               step_alone_images_per_sec=best["images_per_sec"],
               vs_step_alone=e2e["prepared_images_per_sec"] / best["images_per_sec"])
    print(f"  the step alone (fake data on the device, no augmentation) "
          f"{best['images_per_sec']:,.1f}: {100 * e2e['vs_step_alone']:.0f}%")
    out["end_to_end"] = e2e
  print(f"verdict: {text} (the fastest step, {best['variant']} at batch {best['batch_size']}, "
        f"x {devices} local devices)", flush=True)
  return out


def markdown(result) -> str:
  """`benchmark gpu`'s result as a markdown report."""
  n = lambda v, f="{:,.0f}": "n/a" if v is None else f.format(v)
  peak = result["peak_flops"]
  lines = [f"# benchmark gpu: {result['device']} ({result['backend']})", "",
           f"Dense bf16 peak {n(peak and peak / 1e12)} TFLOP/s ({result['peak_from']}); "
           f"{result['compute']} compute at {result['image_size']}px; device memory peak over the "
           f"run {n(result['device_peak_mib'])} MiB; CPU: {result['cpu']['model']}.", "",
           "| variant | batch | images/s | ms/step | TFLOP/s | MFU | compile s | XLA MiB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  lines += [f"| {r['variant']} | {r['batch_size']} | {r['images_per_sec']:,.0f} | "
            f"{r['step_ms']:.1f} | {r['tflops']:.1f} | {n(r['mfu'] and 100 * r['mfu'], '{:.1f}%')}"
            f" | {r['compile_s']:.1f} | {n(r['xla_memory_mib'])} |" for r in result["rows"]]
  reader, e2e = result["reader"], result.get("end_to_end")
  inputs = [("reader, cold (page cache dropped)", reader["cold_images_per_sec"]),
            ("reader, hot", reader["hot_images_per_sec"])]
  if e2e:
    inputs += [(f"{e2e['variant']} at batch {e2e['batch_size']}: prepared data -> device -> "
                "step", e2e["prepared_images_per_sec"]),
               ("the same step on prepared batches kept on the device",
                e2e["prepared_resident_images_per_sec"]),
               ("the step alone", e2e["step_alone_images_per_sec"])]
  lines += ["", f"Input: {reader['data_dir']}, {reader['num_examples']} images at "
            f"{reader['stored_size']}px, batch {reader['batch_size']}, {reader['workers']} "
            "reader threads; wall images/s.", "", "| | images/s |", "|---|---:|"]
  lines += [f"| {name} | {n(v)} |" for name, v in inputs]
  if result.get("verdict"):
    lines += ["", f"Verdict: {result['verdict']['text']}."]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _parser():
  p = argparse.ArgumentParser(prog="python benchmarks/throughput.py",
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
  q.add_argument("--data_dir", default=None,
                 help="image folder (default: random photos written as JPEGs)")
  q.add_argument("--prepared_dir", default=None,
                 help="its prepared copy (default: prepared into a temporary directory)")
  q.add_argument("--augmentation", default="paper,inception")
  q.add_argument("--batches", type=int, default=20, help="JPEG batches timed per pipeline")
  q.add_argument("--train_steps", type=int, default=4,
                 help="steps per round of the end-to-end comparison (0: skip it)")
  q.add_argument("--rounds", type=int, default=3)
  q = sub.add_parser("gpu", help="first run on an accelerator: step, reader, end to end")
  q.add_argument("--variants", default="paper,torchvision")
  q.add_argument("--batch_sizes", default="256,1024")
  q.add_argument("--image_size", type=int, default=224)
  q.add_argument("--steps", type=int, default=10)
  q.add_argument("--rounds", type=int, default=3)
  q.add_argument("--warmup_steps", type=int, default=3)
  q.add_argument("--budget_s", type=float, default=240.0,
                 help="stop starting new step configurations after this many seconds")
  q.add_argument("--peak_tflops", type=float, default=None, help="override the peak")
  q.add_argument("--fp32", action="store_true", help="fp32 instead of bf16 compute")
  q.add_argument("--data_dir", default=None, help="a prepared dataset (default: random "
                 "photos, 4 x the largest batch, prepared at --resize_size in a temporary dir)")
  q.add_argument("--synthetic_images", type=int, default=None)
  q.add_argument("--resize_size", type=int, default=None, help="default: image_size x 8/7")
  q.add_argument("--scratch_dir", default=None, help="where the synthetic set goes (not a "
                 "tmpfs, or cold reads hit memory; default: the system's temporary dir)")
  q.add_argument("--workers", type=int, default=0, help="reader threads (0: config default)")
  q.add_argument("--reader_batches", type=int, default=32,
                 help="batches timed hot (cold: at most one epoch of them)")
  q.add_argument("--end_to_end_steps", type=int, default=10,
                 help="steps per round of the end-to-end row (0: skip it)")
  q.add_argument("--out", default="benchmark_gpu", help="writes OUT.json and OUT.md")
  q.add_argument("--smoke", action="store_true",
                 help="tiny run (batch 2,4 at 96px unless given, 1 step) to check the script")
  return p


def main(argv=None):
  args = _parser().parse_args(argv)
  if args.command != "gpu":  # gpu prints it with its results.
    print_cpu(cpu_info())
  result = _run(args)
  text = json.dumps(result, indent=1, default=float)
  if args.json:
    pathlib.Path(args.json).write_text(text)
  if args.command == "gpu":
    pathlib.Path(f"{args.out}.json").write_text(text)
    pathlib.Path(f"{args.out}.md").write_text(markdown(result))
    print(f"wrote {args.out}.json and {args.out}.md")
  return result


def _run(args):
  if args.command == "gpu":
    if args.smoke:
      defaults = _parser().parse_args(["gpu"])
      if args.batch_sizes == defaults.batch_sizes:
        args.batch_sizes = "2,4"
      if args.image_size == defaults.image_size:
        args.image_size = 96
      args.steps, args.rounds, args.warmup_steps, args.end_to_end_steps = 1, 1, 1, 1
      args.reader_batches = min(args.reader_batches, 2)
    return bench_gpu(args)
  if args.command == "pipeline":
    return bench_pipeline(args)
  config = make_config(args.variant, args.batch_size, args.image_size,
                       cpu_kernels=args.cpu_kernels)
  return bench_step(args.command, config, steps=args.steps, rounds=args.rounds)


if __name__ == "__main__":
  main()
