"""Throughput of the training input pipeline, in images/s per CPU core.

Runs `data.create_train_iterator` on an image folder (by default the
flowers-mini JPEGs) exactly as training would, for each augmentation asked
for, and reports:

  * images/s          wall-clock throughput of the whole pipeline;
  * per core          that divided by the cores this process may use;
  * per CPU-second    images per second of CPU time the process consumed.
                      On a shared machine (other jobs stealing cores) this is
                      the figure to trust; on an idle one the two agree.

The folder is small, so the iterator runs through it many times (it repeats
epochs); the first batches (warm-up: graph tracing, autotuning, disk cache)
are excluded. `--augmentation=...,baseline` adds a plain tf.data map (full
decode -> resize -> random crop -> flip, default tf.data options) measured the
same way, to compare against under the same machine load.

  python benchmarks/pipeline_throughput.py --data_dir=../shared/data/flowers-mini \
      --augmentation=inception
"""

import argparse
import glob
import os
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from alexnet_jax import config_lib  # noqa: E402
from alexnet_jax import data  # noqa: E402

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers-mini"


def cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def baseline_iterator(config):
  """The plain pipeline the target is measured against (no fusing, no tuning)."""
  files = sorted(glob.glob(os.path.join(config.data_dir, "train", "*", "*")))
  size, resize = config.image_size, config.resize_size

  def load(path):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    image = tf.image.resize(image, [resize, resize])
    image = tf.image.random_crop(image, [size, size, 3])
    return tf.cast(tf.image.random_flip_left_right(image), tf.uint8)

  ds = tf.data.Dataset.from_tensor_slices(files).repeat().shuffle(len(files))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(config.batch_size)
  return ({"image": x} for x in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator())


def measure(config, *, seconds, warmup_batches):
  """(images, wall seconds, CPU seconds) over at least `seconds` after warm-up."""
  if config.augmentation == "baseline":
    it = baseline_iterator(config)
  else:
    it = data.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(warmup_batches):
    next(it)
  images, wall0, cpu0 = 0, time.perf_counter(), cpu_seconds()
  while time.perf_counter() - wall0 < seconds:
    images += next(it)["image"].shape[0]
  return images, time.perf_counter() - wall0, cpu_seconds() - cpu0


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=str(DEFAULT_DATA),
                      help="image folder root with train/<class>/* (default: flowers-mini)")
  parser.add_argument("--augmentation", default="paper,inception",
                      help="comma-separated: paper, inception, none, baseline")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--resize_size", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
  parser.add_argument("--warmup_batches", type=int, default=5)
  args = parser.parse_args(argv)

  cores = data.available_cores()
  print(f"{args.data_dir}: batch {args.batch_size}, {args.image_size}px, {cores} cores, "
        f"{args.seconds:.0f}s per run after {args.warmup_batches} warm-up batches")
  for augmentation in args.augmentation.split(","):
    config = config_lib.base_config()
    config.dataset = "imagefolder"
    config.data_dir = args.data_dir
    config.augmentation = augmentation.strip()
    config.image_size = args.image_size
    config.resize_size = args.resize_size
    config.batch_size = args.batch_size
    images, wall, cpu = measure(config, seconds=args.seconds, warmup_batches=args.warmup_batches)
    print(f"{config.augmentation:>10}: {images / wall:7.0f} images/s = {images / wall / cores:6.0f} "
          f"per core; {images / cpu:6.0f} per CPU-second (CPU busy {cpu / wall:.2f} of "
          f"{cores} cores; {images} images)", flush=True)


if __name__ == "__main__":
  main()
