#!/usr/bin/env python3
"""PyTorch reference run of the "seed recipe" that alexnet_jax started from.

Why this file exists
--------------------
alexnet_jax is a JAX/Flax port of a small PyTorch AlexNet project (the
"seed").  To say whether the port trains as well as, and as fast as, the
original, we need the original recipe run on the same small real dataset
(flowers-mini, ImageFolder layout) on the same machine.  This script is that
baseline: one self-contained file that needs only torch, numpy, PIL and the
standard library.  torchvision is deliberately *not* used (it cannot be
installed beside the CPU torch in this environment), so the few transforms
the recipe needs are re-implemented below, line for line after torchvision
(v1 ``torchvision.transforms`` and v2 share these semantics for PIL images):

* RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3)): the same
  ``get_params`` (10 attempts drawing area uniformly and log-ratio uniformly
  from torch's global RNG, in the same order and dtypes, then a centre-crop
  fallback clamped to the ratio range), then ``resized_crop`` which for PIL
  images is ``img.crop((l, t, l+w, t+h))`` followed by
  ``img.resize((224, 224), Image.BILINEAR)`` (PIL always antialiases).
* RandomHorizontalFlip(0.5): ``if torch.rand(1) < 0.5: flip``.
* ToTensor + Normalize(0.5, 0.5): uint8 HWC -> float CHW ``/255``, then
  ``sub_(0.5).div_(0.5)``.
* Eval: Resize((224, 224)) = ``img.resize((224, 224), Image.BILINEAR)``.
* ImageFolder: sorted class folders -> labels 0..K-1, files sorted per class,
  ``Image.open(f).convert('RGB')``.

Because every random draw comes from torch's RNG in the same order as
torchvision would make it, and batching/shuffling uses the real
``torch.utils.data.DataLoader`` (RandomSampler, drop_last=False), a run here
consumes randomness exactly like the seed project would (given the same
worker count: DataLoader workers get their own RNG seeds, so ``--workers 0``
and ``--workers 2`` give different -- equally valid -- augmentation streams).

The model is the half-width AlexNet in torchvision's layout, built by the
shared reference (benchmarks/torch_alexnet.py; state-dict keys
features.{0,3,6,8,10}, classifier.{1,4,6}; no adaptive pool, 224 input gives
6x6), 16,630,440 parameters at 1000 classes (checked at start-up), with the
seed init (conv: kaiming_normal fan_out/relu, bias 0; linear: N(0, 0.01),
bias 0) and Adam(lr=2e-4), batch 32, cross-entropy, 30 epochs, val top-1
after every epoch; the best and final val top-1 are reported.

``--cache decoded`` decodes each JPEG once up front and keeps the RGB PIL
image in memory.  JPEG decoding is deterministic, so this changes no result
(bit-identical inputs), only the time; ``--cache none`` re-decodes from disk
every time an image is used, like a plain ImageFolder.  The up-front decode
is counted inside the timed region.

Example::

    python seed_recipe_torch.py --data_dir /work/shared/data/flowers-mini \
        --epochs 30 --seeds 0 1 2 --threads 2 --workers 0 --cache decoded \
        --json result.json
"""

import argparse
import json
import math
import os
import pathlib
import random
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import torch_alexnet  # noqa: E402  pylint: disable=g-import-not-at-top

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                  ".tiff", ".webp")


# --------------------------------------------------------------------------
# Data: ImageFolder + torchvision-equivalent transforms (PIL + numpy).
# --------------------------------------------------------------------------
def pil_loader(path):
  """torchvision.datasets.folder.pil_loader."""
  with open(path, "rb") as f:
    img = Image.open(f)
    return img.convert("RGB")


def make_samples(root):
  """torchvision ImageFolder's class/sample ordering."""
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  samples = []
  for label, cls in enumerate(classes):
    cdir = os.path.join(root, cls)
    for r, _, fnames in sorted(os.walk(cdir, followlinks=True)):
      for fname in sorted(fnames):
        if fname.lower().endswith(IMG_EXTENSIONS):
          samples.append((os.path.join(r, fname), label))
  return classes, samples


def rrc_get_params(width, height, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
  """torchvision.transforms.RandomResizedCrop.get_params, verbatim logic."""
  area = height * width
  log_ratio = torch.log(torch.tensor(ratio))
  for _ in range(10):
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
    aspect_ratio = torch.exp(
        torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      i = torch.randint(0, height - h + 1, size=(1,)).item()
      j = torch.randint(0, width - w + 1, size=(1,)).item()
      return i, j, h, w
  # Fallback to central crop.
  in_ratio = float(width) / float(height)
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:  # whole image
    w = width
    h = height
  i = (height - h) // 2
  j = (width - w) // 2
  return i, j, h, w


def to_tensor_normalize(img):
  """ToTensor() then Normalize((0.5,)*3, (0.5,)*3), same op order/dtype."""
  arr = np.array(img, np.uint8, copy=True)  # HWC uint8
  t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
  t = t.to(dtype=torch.float32).div(255)
  return t.sub_(0.5).div_(0.5)


CROP_SCALE = [0.08, 1.0]  # RandomResizedCrop's area range; --crop_scale_min changes it.


def train_transform(img, size=224):
  width, height = img.size
  i, j, h, w = rrc_get_params(width, height, scale=tuple(CROP_SCALE))
  img = img.crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)
  if torch.rand(1) < 0.5:  # RandomHorizontalFlip(0.5)
    img = img.transpose(Image.FLIP_LEFT_RIGHT)
  return to_tensor_normalize(img)


def eval_transform(img, size=224):
  return to_tensor_normalize(img.resize((size, size), Image.BILINEAR))


class ImageFolderDS(Dataset):
  """ImageFolder; with cache=True each image is decoded once, up front."""

  def __init__(self, root, transform, cache):
    self.classes, self.samples = make_samples(root)
    self.transform = transform
    self.images = [pil_loader(p) for p, _ in self.samples] if cache else None

  def __len__(self):
    return len(self.samples)

  def __getitem__(self, idx):
    path, label = self.samples[idx]
    img = self.images[idx] if self.images is not None else pil_loader(path)
    return self.transform(img), label


# --------------------------------------------------------------------------
# Model: half-width AlexNet, torchvision key layout, seed init.
# --------------------------------------------------------------------------
def seed_model(num_classes):
  """The shared reference net (benchmarks/torch_alexnet.py, `seed`) with the seed's init."""
  model = torch_alexnet.build("seed", num_classes)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.Linear):
      nn.init.normal_(m.weight, 0, 0.01)
      nn.init.constant_(m.bias, 0)
  return model


EXPECTED_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10)
                 for p in ("weight", "bias")] + \
                [f"classifier.{i}.{p}" for i in (1, 4, 6)
                 for p in ("weight", "bias")]


def check_model():
  m = seed_model(1000)
  n = sum(p.numel() for p in m.parameters())
  assert n == 16_630_440, n
  assert list(m.state_dict().keys()) == EXPECTED_KEYS, list(m.state_dict())
  with torch.no_grad():
    assert m.features(torch.zeros(1, 3, 224, 224)).shape == (1, 128, 6, 6)
  return n


# --------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, loader):
  model.eval()
  correct = total = 0
  for x, y in loader:
    correct += (model(x).argmax(1) == y).sum().item()
    total += y.numel()
  return correct / total


def lr_factor(schedule, steps_per_epoch, epochs, warmup_epochs):
  """step -> multiple of --lr, as alexnet_jax's optim.create_learning_rate_fn: a linear
  warm-up from 0, then constant or cosine decay to 0 over the remaining steps."""
  warmup = int(round(warmup_epochs * steps_per_epoch))
  remaining = max(1, steps_per_epoch * epochs - warmup)

  def factor(step):
    if step < warmup:
      return step / warmup
    if schedule == "constant":
      return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, remaining) / remaining))
  return factor


def run_seed(args, seed):
  t_total = time.perf_counter()
  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)
  classes, _ = make_samples(os.path.join(args.data_dir, "train"))
  model = seed_model(len(classes))
  optimizer = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
  opt = optimizer(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

  t_wall = time.perf_counter()  # timed region: data + train loop + eval
  cpu0 = os.times()
  cache = args.cache == "decoded"
  train_ds = ImageFolderDS(os.path.join(args.data_dir, "train"),
                           train_transform, cache)
  val_ds = ImageFolderDS(os.path.join(args.data_dir, "val"),
                         eval_transform, cache)
  assert train_ds.classes == val_ds.classes == classes
  decode_s = time.perf_counter() - t_wall
  train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, drop_last=False)
  val_loader = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False,
                          num_workers=args.workers)

  schedule = torch.optim.lr_scheduler.LambdaLR(
      opt, lr_factor(args.schedule, len(train_loader), args.epochs, args.warmup_epochs))
  history = []
  train_s = eval_s = 0.0
  best = -1.0
  best_epoch = -1
  for epoch in range(1, args.epochs + 1):
    t0 = time.perf_counter()
    model.train()
    loss_sum = n_seen = 0
    for x, y in train_loader:
      loss = loss_fn(model(x), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      schedule.step()
      loss_sum += loss.item() * y.numel()
      n_seen += y.numel()
    t1 = time.perf_counter()
    acc = evaluate(model, val_loader)
    t2 = time.perf_counter()
    train_s += t1 - t0
    eval_s += t2 - t1
    if acc > best:
      best, best_epoch = acc, epoch
      if args.ckpt_dir:
        os.makedirs(args.ckpt_dir, exist_ok=True)
        torch.save(model.state_dict(),
                   os.path.join(args.ckpt_dir, f"best_seed{seed}.pt"))
    history.append({"epoch": epoch, "train_loss": loss_sum / n_seen,
                    "val_top1": acc, "epoch_s": t2 - t0})
    if args.verbose:
      print(f"  seed {seed} epoch {epoch:3d} loss {loss_sum / n_seen:.4f} "
            f"val {acc:.3f} ({t2 - t0:.1f}s)", flush=True)
  end = time.perf_counter()
  cpu1 = os.times()
  # CPU seconds (user+sys) of this process and of reaped DataLoader workers:
  # a load-insensitive companion to wall time on a shared machine.
  cpu_s = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4]))
  n_train = len(train_ds) * args.epochs
  return {
      "seed": seed,
      "best_val_top1": best,
      "best_epoch": best_epoch,
      "final_val_top1": history[-1]["val_top1"],
      "wall_s": end - t_wall,            # decode + train loop + per-epoch eval
      "total_wall_s": end - t_total,     # + seeding and model build
      "decode_s": decode_s,
      "cpu_s": cpu_s,
      "train_s": train_s,
      "eval_s": eval_s,
      "train_img_per_s": n_train / train_s,
      "overall_img_per_s": n_train / (end - t_wall),
      "history": history,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", required=True, help="ImageFolder root: train/<class>/*, val/<class>/*")
  p.add_argument("--epochs", type=int, default=30)
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--threads", type=int, default=2,
                 help="torch.set_num_threads")
  p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
  p.add_argument("--cache", choices=("none", "decoded"), default="decoded",
                 help="decode JPEGs every use (none) or once up front")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--lr", type=float, default=2e-4)
  # Beyond the seed's recipe (defaults are the seed's): what configs/flowers.py changes.
  p.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
  p.add_argument("--weight_decay", type=float, default=0.0,
                 help="adam: L2 added to the gradient; adamw: decoupled, times the lr")
  p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
  p.add_argument("--warmup_epochs", type=float, default=0.0)
  p.add_argument("--label_smoothing", type=float, default=0.0)
  p.add_argument("--crop_scale_min", type=float, default=0.08)
  p.add_argument("--ckpt_dir", default="",
                 help="if set, save best-val state_dict per seed here")
  p.add_argument("--json", default="", help="write results JSON here")
  p.add_argument("--verbose", action="store_true", help="print every epoch")
  args = p.parse_args()

  torch.set_num_threads(args.threads)
  CROP_SCALE[0] = args.crop_scale_min
  n_params = check_model()
  try:
    load = os.getloadavg()
  except OSError:
    load = None
  print(f"torch {torch.__version__} threads={torch.get_num_threads()} "
        f"workers={args.workers} cache={args.cache} "
        f"mkldnn={torch.backends.mkldnn.is_available()} "
        f"params@1000={n_params} loadavg={load}", flush=True)

  results = []
  for seed in args.seeds:
    r = run_seed(args, seed)
    results.append(r)
    print(f"seed {seed}: best val top-1 {r['best_val_top1']:.3f} "
          f"(epoch {r['best_epoch']}), final {r['final_val_top1']:.3f}, "
          f"wall {r['wall_s']:.1f}s (total {r['total_wall_s']:.1f}s, "
          f"train {r['train_s']:.1f}s, eval {r['eval_s']:.1f}s, "
          f"decode {r['decode_s']:.2f}s, cpu {r['cpu_s']:.1f}s), "
          f"{r['train_img_per_s']:.1f} train img/s, "
          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)

  out = {
      "config": {k: v for k, v in vars(args).items()},
      "torch": torch.__version__,
      "loadavg_start": load,
      "loadavg_end": os.getloadavg(),
      "per_seed": results,
      "mean_best_val_top1": float(np.mean([r["best_val_top1"] for r in results])),
      "mean_final_val_top1": float(np.mean([r["final_val_top1"] for r in results])),
      "mean_wall_s": float(np.mean([r["wall_s"] for r in results])),
  }
  summary = {k: v for k, v in out.items() if k != "per_seed"}
  summary["per_seed"] = [{k: v for k, v in r.items() if k != "history"}
                         for r in results]
  print(json.dumps(summary, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
