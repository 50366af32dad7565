"""`fake`: random uint8 images and labels with the real element spec, no decoding.

For throughput tests of everything but the input pipeline. Images come from a
small pool generated once and labels from a table drawn once, both pure
functions of the example index, so batches are deterministic and resumable.
"""

from __future__ import annotations

import zlib

import numpy as np
import tensorflow as tf

from alexnet_jax.data import sources

_POOL = 16


@sources.register("fake")
class FakeSource(sources.Source):
  """config.fake_num_examples examples per split, config.num_classes (default 1000) classes."""

  preprocessed = True  # `load` gives final images: no augmentation.

  def __init__(self, config):
    self.num_classes = int(config.num_classes or 1000)
    self.class_names = [str(i) for i in range(self.num_classes)]
    self.num_examples = int(config.fake_num_examples)
    self.image_size = config.image_size
    self.eval_crops = config.eval_crops

  def split_names(self):
    return ["train", "validation"]

  def split_size(self, split):
    return self.num_examples

  def _indexed(self, split, process_index, process_count, crops):
    split_tag = zlib.crc32(split.encode()) & 0x7FFFFFFF  # Other splits, other images.
    s = self.image_size
    pool = tf.cast(tf.random.stateless_uniform([_POOL, s, s, 3], [sources.FAKE_TAG, split_tag],
                                               maxval=256, dtype=tf.int32), tf.uint8)
    labels = tf.constant(np.random.default_rng(split_tag).integers(
        0, self.num_classes, self.num_examples, dtype=np.int32))

    def load(index):  # A scalar or a vector of indices into this reader's part.
      index = tf.cast(index, tf.int64) * process_count + process_index
      image = tf.gather(pool, index % _POOL)
      if crops > 1:
        image = tf.stack([image] * crops, axis=-4)
      return {"image": image, "label": tf.gather(labels, index)}

    n = len(range(process_index, self.num_examples, process_count))
    return n, load, lambda index: f"fake example {int(index)}"

  def train_share(self, split, *, seed, shuffle_buffer_size):
    n, load, describe = self._indexed(split, 0, 1, 1)
    return sources.Share(n, lambda epoch: tf.data.Dataset.from_tensor_slices(
        sources.epoch_order(n, seed, epoch)), load, describe)

  def eval_share(self, split, process_index, process_count):
    n, load, describe = self._indexed(split, process_index, process_count, self.eval_crops)
    return sources.Share(n, lambda epoch: tf.data.Dataset.range(n), load, describe)
