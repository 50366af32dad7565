"""`fake`: random uint8 images and labels, made once and kept on the accelerator.

For measuring the step alone: a pool of a few global batches is generated
once, copied to the devices once (the iterator marks its batches reusable,
see `parallel.prefetch_to_mesh`), and step t trains on pool[t % pool size].
No host work per step. The eval split is config.fake_num_examples examples,
padded and masked like real data.
"""

from __future__ import annotations

import collections.abc
import itertools
import math
import zlib

import numpy as np

from alexnet_jax.data import sources

POOL = 4


class _Pool(collections.abc.Iterator):
  """Infinite or finite iteration over the same few batch objects."""

  reusable_batches = True  # The same objects come back: copy each to the devices once.

  def __init__(self, batches, start=0, stop=None):
    self._it = itertools.islice(itertools.cycle(batches), start, stop)

  def __next__(self):
    return next(self._it)


def _global_batch(seed, split, index, size, image_shape, num_classes):
  """Global batch `index` of a split: a pure function of its arguments."""
  rng = np.random.default_rng([seed, sources.FAKE_TAG, zlib.crc32(split.encode()), index])
  return {"image": rng.integers(0, 256, (size,) + image_shape, np.uint8),
          "label": rng.integers(0, num_classes, size, np.int32)}


@sources.register("fake")
class FakeSource(sources.Source):
  """config.fake_num_examples per split, config.num_classes (default 1000) classes."""

  def __init__(self, config):
    self.num_classes = int(config.num_classes or 1000)
    self.class_names = [str(i) for i in range(self.num_classes)]
    self.num_examples = int(config.fake_num_examples)

  def split_names(self):
    return ["train", "validation"]

  def split_size(self, split):
    return self.num_examples

  def train_iterator(self, config, *, start_step, process_index, process_count):
    local = config.batch_size // process_count
    s = int(config.image_size)
    pool = []
    for k in range(POOL):
      batch = _global_batch(int(config.seed), "train", k, config.batch_size, (s, s, 3),
                            self.num_classes)
      pool.append({key: v[process_index * local:(process_index + 1) * local]
                   for key, v in batch.items()})
    return _Pool(pool, start=start_step)

  def eval_iterator(self, config, *, process_index, process_count):
    global_batch = int(config.eval_batch_size)
    local = global_batch // process_count
    s = int(config.image_size)
    shape = (s, s, 3) if config.eval_crops == 1 else (config.eval_crops, s, s, 3)
    num_batches = math.ceil(self.num_examples / global_batch)
    batches = []
    for k in range(num_batches):
      batch = _global_batch(int(config.seed), "validation", k, global_batch, shape,
                            self.num_classes)
      position = k * global_batch + np.arange(global_batch)
      batch["mask"] = position < self.num_examples
      batch["image"][~batch["mask"]] = 0
      batch["label"][~batch["mask"]] = 0
      batches.append({key: v[process_index * local:(process_index + 1) * local]
                      for key, v in batch.items()})
    return _Pool(batches, stop=num_batches)
