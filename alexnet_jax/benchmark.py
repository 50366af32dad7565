"""Throughput of the real train and eval steps, side by side with PyTorch.

  python -m alexnet_jax.benchmark train [--variant=seed --batch_size=64]
  python -m alexnet_jax.benchmark eval  [--variant=seed --batch_size=64]
  python -m alexnet_jax.benchmark pipeline [--augmentation=paper]
  python -m alexnet_jax.benchmark gpu [--smoke]

`train` and `eval` time the project's own jitted steps
(`train.make_train_step` / `make_eval_step` on a 1-device mesh, compiled ahead
of time like `train_and_evaluate` does) on synthetic uint8 batches, so the
figure is what training gets, minus input. With torch importable, the same
network is built in PyTorch from the same layer table (`models.ARCHITECTURES`,
torchvision layout, NCHW), trained with the same optimiser (SGD, momentum 0.9,
coupled weight decay 5e-4), and measured in the same process, interleaved
round by round with JAX so both see the same machine load; the speed ratio is
printed. Warm-up is excluded; figures are medians over rounds. PyTorch gets
float NCHW batches already normalised (what its DataLoader would hand it);
JAX gets uint8 NHWC and normalises inside the step, as our training does.

`pipeline` measures the training input pipeline (per core and per
CPU-second, via benchmarks/pipeline_throughput.py) and the train step on the
same machine, and says whether the pipeline keeps up.

`gpu` is the accelerator table: bf16 images/s and model FLOP utilisation
(forward MACs x 2 FLOPs x 3 for forward+backward, over the card's dense bf16
peak) for `paper` and `torchvision` at batch 128..1024, in bounded time.
`--smoke` runs it tiny on any backend (a correctness check of the script).

`--cpu_kernels=off` measures the plain formulation (flax's max pool, XLA:CPU's
default convolutions); the default `auto` is what training uses.
benchmarks/cpu_before_after.py tabulates both against PyTorch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

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


def peak_bf16_flops(device_kind: str):
  """(peak FLOP/s, matched name) for a device kind, or (None, None) if unknown."""
  for name, peak in PEAK_BF16_FLOPS:
    if name.lower() in device_kind.lower():
      return peak, name
  return None, None


# --------------------------------------------------------------------------
# Timing helpers.
# --------------------------------------------------------------------------


def _cores() -> int:
  """CPU cores this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def median(values):
  return statistics.median(values) if values else float("nan")


def peak_rss_mib() -> float:
  """This process's peak resident memory (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _xla_memory_mib(compiled):
  """XLA's static memory estimate for a compiled program, or None."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    return None
  if m is None:
    return None
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return total / 2**20


def _device_peak_mib(device):
  """The allocator's peak bytes in use (GPU/TPU), or None (CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**20


# --------------------------------------------------------------------------
# JAX side: the project's own steps.
# --------------------------------------------------------------------------


def make_config(variant, batch_size, image_size=None, *, half_precision=False,
                cpu_kernels="auto", num_classes=1000):
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.model.variant = variant
  c.model.cpu_kernels = cpu_kernels
  c.image_size = image_size or models.default_image_size(variant)
  c.resize_size = max(c.resize_size, c.image_size)
  c.batch_size = batch_size
  c.eval_batch_size = batch_size
  c.eval_crops = 1
  c.num_classes = num_classes
  c.lr_schedule = "constant"
  c.half_precision = half_precision
  return c


def synthetic_batch(config, *, eval_batch=False, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  b, s = config.batch_size, config.image_size
  batch = {"image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
           "label": rng.integers(0, config.num_classes, (b,), dtype=np.int32)}
  if eval_batch:
    batch["mask"] = np.ones((b,), bool)
  return batch


class JaxTrainStep:
  """The real train step, compiled ahead of time, on a device-resident batch."""

  def __init__(self, config, device=None, state=None):
    """`state`: a train state of the same model to reuse (skips compiling the initialiser)."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from alexnet_jax import config_lib, optim, parallel, steps  # pylint: disable=g-import-not-at-top
    self.config = config
    self.mesh = parallel.create_mesh([device or jax.devices()[0]])
    model = config_lib.create_model(config, config.num_classes)
    tx = optim.create_optimizer(config)
    step = steps.make_train_step(model, tx, optim.create_learning_rate_fn(config, 1000),
                                 config, self.mesh)
    start = time.perf_counter()
    self.compiled = step.lower(steps.abstract_train_state(model, tx, config, self.mesh),
                               steps.abstract_window(self.mesh),
                               steps.abstract_batch(config, self.mesh)).compile()
    self.compile_s = time.perf_counter() - start
    self.memory_mib = _xla_memory_mib(self.compiled)
    self.state = state if state is not None else steps.create_train_state(model, tx, config,
                                                                           self.mesh)
    self.batch = parallel.to_global(synthetic_batch(config), self.mesh)
    self.window = parallel.replicate(steps.empty_window(), self.mesh)

  def run(self, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step over `steps` steps (one final sync)."""
    import jax  # pylint: disable=g-import-not-at-top
    start, cpu = time.perf_counter(), time.process_time()
    metrics = None
    for _ in range(steps):
      self.state, metrics = self.compiled(self.state, self.window, self.batch)
    jax.block_until_ready(metrics)
    return ((time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps)


class JaxEvalStep:
  """The real eval step (single crop, masked sums), compiled ahead of time."""

  def __init__(self, config, device=None):
    import jax  # pylint: disable=g-import-not-at-top
    from alexnet_jax import config_lib, models, parallel, steps  # pylint: disable=g-import-not-at-top
    self.mesh = parallel.create_mesh([device or jax.devices()[0]])
    model = config_lib.create_model(config, config.num_classes)
    step = steps.make_eval_step(model, config, self.mesh)
    params = jax.eval_shape(lambda: models.init_params(model, config.image_size, jax.random.key(0)))
    sharding = parallel.replicated(self.mesh)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            params)
    start = time.perf_counter()
    self.compiled = step.lower(abstract, steps.abstract_batch(config, self.mesh,
                                                              eval_batch=True)).compile()
    self.compile_s = time.perf_counter() - start
    self.memory_mib = _xla_memory_mib(self.compiled)
    self.params = jax.jit(lambda: models.init_params(model, config.image_size, jax.random.key(0)),
                          out_shardings=sharding)()
    self.batch = parallel.to_global(synthetic_batch(config, eval_batch=True), self.mesh)

  def run(self, steps: int) -> tuple[float, float]:
    import jax  # pylint: disable=g-import-not-at-top
    start, cpu = time.perf_counter(), time.process_time()
    out = [self.compiled(self.params, self.batch) for _ in range(steps)]
    jax.block_until_ready(out)
    return ((time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps)


# --------------------------------------------------------------------------
# PyTorch side: the same network in torchvision's layout.
# --------------------------------------------------------------------------


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None


def build_torch_model(variant: str, num_classes: int = 1000, *, lrn=None, activation="relu",
                      dropout_rate=None):
  """The variant as a torch.nn.Module with torchvision's layout (NCHW).

  `features` / `avgpool` / `classifier` like `torchvision.models.AlexNet`, so
  the state dict has torchvision's keys (`features.0.weight`,
  `classifier.1.weight`, ...) and `convert.from_torch_state_dict` maps it to
  our Flax params. Built from the same layer table as the Flax model
  (`models.ARCHITECTURES`): layer shapes, grouped convolutions (paper), LRN,
  pooling and dropout placement agree; tests/test_benchmark.py checks the
  parameter counts and, for `seed`, equal logits after conversion.
  """
  from torch import nn  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  arch = models.ARCHITECTURES[variant]
  lrn = arch.defaults["lrn"] if lrn is None else lrn
  rate = arch.defaults["dropout_rate"] if dropout_rate is None else dropout_rate
  acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
          "selu": nn.SELU}
  layers, channels, size = [], 3, arch.image_size
  for spec in arch.convs:
    layers += [nn.Conv2d(channels, spec.features, spec.kernel, stride=spec.stride,
                         padding=spec.padding, groups=spec.groups), acts[activation]()]
    size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
    if spec.lrn and lrn:
      layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
    if spec.pool:
      layers.append(nn.MaxPool2d(3, 2))
      size = (size - 3) // 2 + 1
    channels = spec.features
  if arch.avg_pool is not None:
    avgpool = nn.AdaptiveAvgPool2d(arch.avg_pool)
    size = arch.avg_pool[0]
  else:
    avgpool = nn.Identity()
  head, width = [], channels * size * size
  for _, hidden in arch.hidden:
    if rate and arch.dropout_before_hidden:
      head.append(nn.Dropout(rate))
    head += [nn.Linear(width, hidden), acts[activation]()]
    if rate and not arch.dropout_before_hidden:
      head.append(nn.Dropout(rate))
    width = hidden
  head.append(nn.Linear(width, num_classes))

  class TorchAlexNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.features = nn.Sequential(*layers)
      self.avgpool = avgpool
      self.classifier = nn.Sequential(*head)

    def forward(self, x):
      return self.classifier(self.avgpool(self.features(x)).flatten(1))

  return TorchAlexNet()


class TorchTrainStep:
  """torch.optim.SGD(momentum=0.9, weight_decay=5e-4) on a fixed NCHW batch."""

  def __init__(self, config, *, image_size=None):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    size = image_size or config.image_size
    self.model = build_torch_model(config.model.variant, config.num_classes)
    self.model.train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=config.learning_rate,
                               momentum=config.momentum, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(0)
    self.images = torch.randn(config.batch_size, 3, size, size, generator=gen)
    self.labels = torch.randint(0, config.num_classes, (config.batch_size,), generator=gen)

  def run(self, steps: int) -> tuple[float, float]:
    torch = self.torch
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
      loss.backward()
      self.opt.step()
      loss.item()
    return ((time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps)


class TorchEvalStep:
  def __init__(self, config):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    self.model = build_torch_model(config.model.variant, config.num_classes).eval()
    gen = torch.Generator().manual_seed(0)
    s = config.image_size
    self.images = torch.randn(config.batch_size, 3, s, s, generator=gen)

  def run(self, steps: int) -> tuple[float, float]:
    torch = self.torch
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
      for _ in range(steps):
        self.model(self.images).argmax(-1)
    return ((time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps)


# --------------------------------------------------------------------------
# Subcommands.
# --------------------------------------------------------------------------


def interleaved(runners: dict, *, steps: int, rounds: int, warmup: int = 1):
  """(wall, CPU) seconds per step for each runner, round by round (A, B, A, B, ...).

  Returns two dicts name -> list over rounds. CPU seconds are the process's
  (all threads); with one core per process (`--cpus=1`) they do not grow with
  other jobs' load the way wall time does.
  """
  for runner in runners.values():
    for _ in range(warmup):
      runner.run(steps)
  wall = {name: [] for name in runners}
  cpu = {name: [] for name in runners}
  for _ in range(rounds):
    for name, runner in runners.items():
      w, c = runner.run(steps)
      wall[name].append(w)
      cpu[name].append(c)
  return wall, cpu


def _summary(kind, config, jax_step, times, cpu_times, *, use_torch):
  """Prints the result block and returns it as a dict."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import cpu_kernels  # pylint: disable=g-import-not-at-top
  b = config.batch_size
  jax_ips = b / median(times["jax"])
  out = {"kind": kind, "variant": config.model.variant, "batch_size": b,
         "image_size": config.image_size, "backend": jax.default_backend(),
         "device": jax.devices()[0].device_kind, "jax_images_per_sec": jax_ips,
         "jax_step_ms": 1e3 * median(times["jax"]), "compile_s": jax_step.compile_s,
         "jax_cpu_s_per_step": median(cpu_times["jax"]), "cores": _cores(),
         "xla_memory_mib": jax_step.memory_mib, "rounds": len(times["jax"]),
         "cpu_kernels": config.model.cpu_kernels,
         "compiler_options": cpu_kernels.compiler_options(config.model.cpu_kernels)}
  peak = _device_peak_mib(jax.devices()[0])
  if peak is not None:
    out["device_peak_mib"] = peak
  print(f"{kind}: {config.model.variant}, batch {b} at {config.image_size}px on "
        f"{out['backend']} ({out['device']}), {out['cores']} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"  JAX     {jax_ips:8.1f} images/s  ({out['jax_step_ms']:.0f} ms/step, "
        f"{out['jax_cpu_s_per_step']:.2f} CPU-s/step, median of "
        f"{out['rounds']} rounds; compile {jax_step.compile_s:.1f}s; XLA memory estimate "
        + (f"{jax_step.memory_mib:.0f} MiB" if jax_step.memory_mib is not None else "n/a")
        + (f"; device peak {peak:.0f} MiB" if peak is not None else "") + ")")
  if use_torch:
    torch_ips = b / median(times["torch"])
    ratios = [t / j for j, t in zip(times["jax"], times["torch"])]
    out.update(torch_images_per_sec=torch_ips, torch_step_ms=1e3 * median(times["torch"]),
               torch_cpu_s_per_step=median(cpu_times["torch"]),
               ratio=jax_ips / torch_ips, round_ratios=ratios,
               cpu_ratio=median(cpu_times["torch"]) / median(cpu_times["jax"]))
    print(f"  PyTorch {torch_ips:8.1f} images/s  ({out['torch_step_ms']:.0f} ms/step, "
          f"{out['torch_cpu_s_per_step']:.2f} CPU-s/step)")
    print(f"  JAX / PyTorch speed = {out['ratio']:.2f}x wall-clock (per-round "
          f"{min(ratios):.2f}..{max(ratios):.2f}), {out['cpu_ratio']:.2f}x by CPU-seconds")
  print(f"  process peak RSS {peak_rss_mib():.0f} MiB (both frameworks together)", flush=True)
  return out


def _bench(kind, jax_runner, torch_runner, config, *, steps, rounds, use_torch):
  """Times a JAX step (and its PyTorch twin) interleaved, then prints the summary."""
  jax_step = jax_runner(config)
  runners = {"jax": jax_step}
  if use_torch:
    runners["torch"] = torch_runner(config)
  times, cpu_times = interleaved(runners, steps=steps, rounds=rounds)
  return _summary(kind, config, jax_step, times, cpu_times, use_torch=use_torch)


def bench_train(config, *, steps, rounds, use_torch):
  return _bench("train", JaxTrainStep, TorchTrainStep, config, steps=steps, rounds=rounds,
                use_torch=use_torch)


def bench_eval(config, *, steps, rounds, use_torch):
  return _bench("eval", JaxEvalStep, TorchEvalStep, config, steps=steps, rounds=rounds,
                use_torch=use_torch)


def _pipeline_module():
  """benchmarks/pipeline_throughput.py (owned by the input-pipeline side), imported by path."""
  path = REPO_ROOT / "benchmarks" / "pipeline_throughput.py"
  spec = importlib.util.spec_from_file_location("pipeline_throughput", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def measure_pipeline(augmentation, *, image_size, batch_size, seconds, data_dir=None):
  """One run of the training input pipeline; returns a dict of rates.

  Uses the flowers-mini JPEGs (or `data_dir`) through `imagefolder`, so JPEG
  decoding is included; without them, the `fake` dataset (no decode) and the
  result says so.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  pipeline = _pipeline_module()
  data_dir = pathlib.Path(data_dir) if data_dir else pipeline.DEFAULT_DATA
  c = config_lib.base_config()
  if (data_dir / "train").is_dir():
    c.dataset, c.data_dir, source = "imagefolder", str(data_dir), str(data_dir)
  else:
    c.dataset, source = "fake", "fake data (no JPEG decode; pass --data_dir)"
  c.augmentation = augmentation.strip()
  c.image_size, c.resize_size = image_size, max(256, image_size)
  c.batch_size = batch_size
  images, wall, cpu = pipeline.measure(c, seconds=seconds, warmup_batches=3)
  cores = _cores()
  return dict(augmentation=c.augmentation, source=source, images_per_sec=images / wall,
              per_core=images / wall / cores, per_cpu_second=images / max(cpu, 1e-9),
              cores=cores)


def _keeps_up_line(p, step_ips):
  """How many cores of input work a step at `step_ips` needs, from CPU-seconds per image."""
  needed = step_ips / p["per_cpu_second"]
  verdict = "keeps up" if needed <= p["cores"] else "does NOT keep up"
  return needed, (f"  {p['augmentation']:>10} on {p['source']}: {p['images_per_sec']:.0f} "
                  f"images/s = {p['per_core']:.0f} per core; {p['per_cpu_second']:.0f} per "
                  f"CPU-second. {step_ips:.0f} images/s need {needed:.2f} of the "
                  f"{p['cores']} cores: {verdict}")


def bench_pipeline(args):
  """Input images/s per core vs the train step's images/s on this machine."""
  config = make_config(args.variant, args.batch_size, args.image_size,
                       cpu_kernels=args.cpu_kernels)
  train_ips = args.batch_size / median(
      interleaved({"jax": JaxTrainStep(config)}, steps=args.steps, rounds=args.rounds)[0]["jax"])
  print(f"train step: {config.model.variant}, batch {config.batch_size}: "
        f"{train_ips:.1f} images/s on {_cores()} cores")
  results = []
  for augmentation in args.augmentation.split(","):
    p = measure_pipeline(augmentation, image_size=config.image_size,
                         batch_size=args.batch_size, seconds=args.seconds,
                         data_dir=args.data_dir)
    p["cores_needed"], line = _keeps_up_line(p, train_ips)
    p["keeps_up"] = p["cores_needed"] <= p["cores"]
    results.append(p)
    print(line + (" (on a CPU backend the step itself uses these cores too: input work "
                  f"takes ~{100 * p['cores_needed'] / p['cores']:.0f}% of the machine)"),
          flush=True)
  return {"train_images_per_sec": train_ips, "pipelines": results}


def bench_gpu(args):
  """bf16 images/s and MFU for paper/torchvision over batch sizes, in bounded time."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  kind = device.device_kind
  peak, matched = peak_bf16_flops(kind)
  if args.peak_tflops:
    peak, matched = args.peak_tflops * 1e12, "--peak_tflops"
  variants = args.variants.split(",")
  batches = [int(b) for b in args.batch_sizes.split(",")]
  size = args.image_size
  print(f"device: {kind} ({jax.default_backend()}); dense bf16 peak: "
        + (f"{peak / 1e12:.0f} TFLOP/s ({matched})" if peak else "unknown (pass --peak_tflops)"))
  start, rows = time.perf_counter(), []
  header = (f"{'variant':<12} {'batch':>6} {'images/s':>10} {'ms/step':>8} {'TFLOP/s':>8} "
            f"{'MFU':>6} {'compile s':>9} {'XLA MiB':>8}")
  print(header)
  for variant in variants:
    flops_per_image = 3 * 2 * models.forward_macs(variant, image_size=size)
    state = None  # one initialisation per variant, reused across batch sizes
    for b in batches:
      if time.perf_counter() - start > args.budget_s:
        print(f"{variant:<12} {b:>6}  skipped: time budget {args.budget_s:.0f}s spent")
        continue
      config = make_config(variant, b, size, half_precision=not args.fp32)
      try:
        step = JaxTrainStep(config, device, state=state)
        step.run(args.warmup_steps)
        per_step = median([step.run(args.steps)[0] for _ in range(args.rounds)])
      except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory)
        print(f"{variant:<12} {b:>6}  failed: {type(e).__name__}: {str(e)[:200]}")
        state = None  # it may have been donated to the failed step
        continue
      ips = b / per_step
      achieved = ips * flops_per_image
      mfu = achieved / peak if peak else None
      mem = step.memory_mib
      rows.append(dict(variant=variant, batch_size=b, images_per_sec=ips,
                       step_ms=1e3 * per_step, tflops=achieved / 1e12, mfu=mfu,
                       compile_s=step.compile_s, xla_memory_mib=mem))
      print(f"{variant:<12} {b:>6} {ips:>10.0f} {1e3 * per_step:>8.1f} {achieved / 1e12:>8.1f} "
            + (f"{100 * mfu:>5.1f}%" if mfu is not None else f"{'n/a':>6}")
            + f" {step.compile_s:>9.1f} " + (f"{mem:>8.0f}" if mem else f"{'n/a':>8}"),
            flush=True)
      state = step.state
      del step
  if args.pipeline_seconds > 0 and rows:
    best = max(r["images_per_sec"] for r in rows)
    print(f"input pipeline on this host vs the best step ({best:.0f} images/s):")
    for augmentation in ("inception", "paper"):
      p = measure_pipeline(augmentation, image_size=size, batch_size=256,
                           seconds=args.pipeline_seconds)
      needed, line = _keeps_up_line(p, best)
      print(line, flush=True)
  peak_mib = _device_peak_mib(device)
  if peak_mib is not None:
    print(f"device memory peak over the whole run: {peak_mib:.0f} MiB")
  print(f"total {time.perf_counter() - start:.0f}s; MFU = images/s x {3 * 2} x forward MACs "
        f"(models.forward_macs, {size}px) / peak; {'fp32' if args.fp32 else 'bf16'} compute, "
        "fp32 params; batch resident on the device (input pipeline not included).")
  return {"device": kind, "peak_flops": peak, "rows": rows}


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _parser():
  p = argparse.ArgumentParser(prog="python -m alexnet_jax.benchmark",
                              description=__doc__.split("\n")[0])
  p.add_argument("--json", default=None, help="also write the results to this JSON file")
  sub = p.add_subparsers(dest="command", required=True)

  def common(q, batch=64, rounds=5, steps=2):
    q.add_argument("--variant", default="seed", help="paper | torchvision | seed | small")
    q.add_argument("--batch_size", type=int, default=batch)
    q.add_argument("--image_size", type=int, default=None, help="default: the variant's")
    q.add_argument("--steps", type=int, default=steps, help="steps per timed round")
    q.add_argument("--rounds", type=int, default=rounds, help="timed rounds (median)")
    q.add_argument("--cpu_kernels", default="auto", help="model.cpu_kernels: auto | on | off")
    q.add_argument("--cpus", type=int, default=None,
                   help="pin the process to this many cores first (1: a load-robust "
                        "single-core comparison)")

  for name in ("train", "eval"):
    q = sub.add_parser(name, help=f"{name} step images/s (and PyTorch's)")
    common(q)
    q.add_argument("--no_torch", action="store_true", help="skip the PyTorch comparison")
    q.add_argument("--half_precision", action="store_true", help="bf16 compute")
  q = sub.add_parser("pipeline", help="input pipeline vs train step")
  common(q, rounds=3, steps=1)
  q.add_argument("--augmentation", default="paper,inception")
  q.add_argument("--data_dir", default=None, help="image folder (default: flowers-mini)")
  q.add_argument("--seconds", type=float, default=10.0, help="pipeline seconds per run")
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
  q.add_argument("--pipeline_seconds", type=float, default=8.0,
                 help="also time the input pipeline on this host for this long per "
                      "augmentation and say whether it keeps up (0: skip)")
  q.add_argument("--smoke", action="store_true",
                 help="tiny run (batch 2,4 at 96px unless given, 1 step) to check the "
                      "script on any backend")
  return p


def main(argv=None):
  args = _parser().parse_args(argv)
  result = _run(args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1, default=float)
  return result


def _run(args):
  sys.path.insert(0, str(REPO_ROOT))  # configs/
  if getattr(args, "cpus", None):
    if not hasattr(os, "sched_setaffinity"):
      raise SystemExit("--cpus needs os.sched_setaffinity (Linux).")
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cpus <= len(available):
      raise SystemExit(f"--cpus={args.cpus}: choose 1..{len(available)}.")
    os.sched_setaffinity(0, available[:args.cpus])  # before JAX/torch size their pools
  if args.command == "gpu":
    if args.smoke:
      defaults = _parser().parse_args(["gpu"])
      if args.batch_sizes == defaults.batch_sizes:
        args.batch_sizes = "2,4"
      if args.image_size == defaults.image_size:
        args.image_size = 96
      args.steps, args.rounds, args.warmup_steps = 1, 1, 1
      args.pipeline_seconds = min(args.pipeline_seconds, 2.0)
    return bench_gpu(args)
  if args.command == "pipeline":
    return bench_pipeline(args)
  use_torch = not args.no_torch and torch_available()
  if not args.no_torch and not use_torch:
    print("torch is not installed: JAX figures only.")
  if use_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(_cores())
  config = make_config(args.variant, args.batch_size, args.image_size,
                       half_precision=args.half_precision, cpu_kernels=args.cpu_kernels)
  fn = bench_train if args.command == "train" else bench_eval
  return fn(config, steps=args.steps, rounds=args.rounds, use_torch=use_torch)


if __name__ == "__main__":
  main()
