"""Small training splits, decoded once and kept in memory (`config.cache_train`).

"auto" caches a split whose decoded size, estimated from its first images, fits
in 1 GiB. Full-resolution decodes (accurate IDCT) are read back by index in the
epoch's order from (config.seed, epoch), the same for every process and after a
resume; the pixels differ slightly from the streaming pipeline's, which decodes
only each crop's window.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from alexnet_jax.data import augment
from alexnet_jax.data import sources

BUDGET_BYTES = 1 << 30
_SAMPLE = 16


def _decoded(records, count, cores):
  """(images, labels) of the first `count` records in file order (None: a file fails)."""
  ds = records.epoch(tf.constant(0, tf.int64)).take(count).map(
      lambda r: (lambda ex: (augment.decode(ex["image"]), ex["label"]))(records.load(r)),
      num_parallel_calls=cores)
  images, labels = [], []
  try:
    for image, label in ds.as_numpy_iterator():
      images.append(image)
      labels.append(label)
  except (tf.errors.OpError, ValueError):
    return None  # Streaming names the file that fails.
  return images, labels


def decoded_records(source, split, *, seed, setting, cores) -> sources.Records | None:
  """Training Records that read decoded images from memory, or None to stream the split."""
  if setting is False or setting is None:
    return None
  file_order = source.eval_records(split, 0, 1)
  n = file_order.num_examples
  if setting == "auto":
    sample = _decoded(file_order, min(_SAMPLE, n), cores)
    if sample is None:
      return None
    estimate = n * np.mean([im.nbytes for im in sample[0]])
    if estimate > BUDGET_BYTES:
      return None
  decoded = _decoded(file_order, n, cores)
  if decoded is None:
    return None
  images, labels = decoded
  shapes = np.array([im.shape[:2] for im in images], np.int64)
  offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1] * 3)])
  pixels = tf.constant(np.concatenate([im.reshape(-1) for im in images]))
  shapes_t, offsets_t = tf.constant(shapes), tf.constant(offsets)
  labels_t = tf.constant(np.asarray(labels, np.int32))
  logging.info("Decoded the %d training images of %s once; %.0f MiB in memory "
               "(config.cache_train).", n, split, pixels.shape[0] / 2**20)

  def load(index):
    start, stop = offsets_t[index], offsets_t[index + 1]
    image = tf.reshape(pixels[start:stop], tf.concat([shapes_t[index], [3]], 0))
    return {"image": image, "label": labels_t[index]}

  return sources.Records(n, lambda epoch: tf.data.Dataset.from_tensor_slices(
      sources.epoch_order(n, seed, epoch)), load,
                       lambda index: f"cached image {int(index)} of {split}")
