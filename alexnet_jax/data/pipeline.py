"""Sources -> per-process numpy batches: the shared tf.data pipeline.

Three promises, each tested:

* Exact eval. Each process reads its own part of the eval split, pads its last
  batches with zero images whose `mask` is False, and yields
  `num_eval_batches(config)` batches, the same number on every process; the
  real examples of all processes are the split, each exactly once.
* One global order. Training epoch e visits the split in an order drawn from
  (config.seed, e) that every process computes; process p keeps the p-th
  slice of every global batch, so global batch t is the same examples on any
  number of processes. An example's augmentation seed is derived from
  (config.seed, its index in the stream of global batches).
* Exact, cheap resume. `create_train_iterator(config, start_step=k)` yields
  what an uninterrupted iterator yields from step k on, starting at the right
  epoch and skipping the rest as undecoded records.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import logging
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from alexnet_jax import runtime
from alexnet_jax.data import augment
from alexnet_jax.data import cache
from alexnet_jax.data import sources

runtime.hide_accelerators_from_tensorflow()

# Eval passes this small (preprocessed crops) are kept in memory after the first.
EVAL_CACHE_BYTES = 512 << 20


def _options(ds):
  options = tf.data.Options()
  options.deterministic = True  # Order is part of the determinism promise.
  # One thread per op: parallelism comes from many elements at once (faster
  # per core than ops spreading out).
  options.threading.max_intra_op_parallelism = 1
  # No autotuning model: destroying an iterator waits for its sleeping
  # optimiser thread (up to 60 s in TF 2.21); a fixed map parallelism of one
  # element per core is as fast here.
  options.autotune.enabled = False
  return ds.with_options(options)


def create_train_iterator(config, source, *, start_step, process_index,
                          process_count) -> "BatchIterator":
  """`data.create_train_iterator` for a source of records (checked arguments).

  Resuming at start_step=k skips the k * b records before it undecoded.
  """
  local_batch = config.batch_size // process_count
  train_split = sources.resolve_splits(config, source)[0]
  global_batch, seed = config.batch_size, int(config.seed)
  records = cache.decoded_records(source, train_split, seed=seed, setting=config.cache_train,
                              cores=sources.available_cores()) or source.train_records(
                                  train_split, seed=seed,
                                  shuffle_buffer_size=int(config.shuffle_buffer_size))
  n = records.num_examples
  if n < global_batch:
    raise ValueError(f"Split {train_split!r} of {source.name} has {n} examples, fewer than "
                     f"one global batch (config.batch_size={global_batch}).")
  preprocess = augment.train_preprocess_fn(config)

  def records_from(position):
    """(position, record) of this process's stream from `position` on (nothing decoded).

    Walks the global stream from the start of this step's global batch and
    keeps this process's slice of every batch.
    """
    step, within = divmod(position, local_batch)
    start = step * global_batch
    start_epoch, offset = divmod(start, n)
    ds = tf.data.Dataset.counter(start_epoch).flat_map(records.epoch).skip(offset)
    ds = ds.enumerate(start=start).filter(
        lambda g, record: (g % global_batch) // local_batch == process_index)
    return ds.skip(within).map(lambda g, record: record).enumerate(start=position)

  def example(position, record):
    ex = records.load(record)
    step, i = position // local_batch, position % local_batch
    global_index = step * global_batch + process_index * local_batch + i
    image = preprocess(ex["image"], sources.derived_seed(seed, sources.AUGMENT_TAG, global_index))
    return {"image": image, "label": ex["label"], "_pos": position}

  first = start_step * local_batch
  ds = records_from(first).map(example, num_parallel_calls=sources.available_cores())
  if source.may_contain_corrupt_files and config.skip_corrupt_images:
    ds = ds.ignore_errors(log_warning=True)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return BatchIterator(_options(ds), start_position=first, batch_size=local_batch,
                       replay=_Replay(records_from, example, records.describe))


def create_eval_iterator(config, *, process_index, process_count) -> "BatchIterator":
  """`data.create_eval_iterator` for a source of records (checked arguments).

  The pipeline is built once per config and process, then only iterated
  again: later evals skip the seconds TF spends building it.
  """
  local_batch = config.eval_batch_size // process_count
  key = (config.to_json_best_effort(), process_index, process_count)
  if key not in _EVAL_PIPELINES:
    if len(_EVAL_PIPELINES) >= 4:
      _EVAL_PIPELINES.pop(next(iter(_EVAL_PIPELINES)))
    _EVAL_PIPELINES[key] = _eval_pipeline(config, process_index, process_count, local_batch)
  ds, num_real, replay = _EVAL_PIPELINES[key]
  return BatchIterator(ds, start_position=0, batch_size=local_batch, num_real=num_real,
                       replay=replay)


_EVAL_PIPELINES: dict = {}


def _eval_pipeline(config, process_index, process_count, local_batch):
  """(tf.data pipeline, real examples, replay) of one process's eval pass."""
  source = sources.create(config)
  eval_split = sources.resolve_splits(config, source)[1]
  records = source.eval_records(eval_split, process_index, process_count)
  num_batches = math.ceil(source.split_size(eval_split) / config.eval_batch_size)
  total = num_batches * local_batch
  if records.num_examples > total:  # Cannot happen with even splits; guards the padding.
    raise AssertionError(f"Process {process_index} has {records.num_examples} eval examples, "
                         f"more than {num_batches} batches of {local_batch} hold.")
  preprocess = augment.eval_preprocess_fn(config)
  s = config.image_size
  image_shape = [s, s, 3] if config.eval_crops == 1 else [config.eval_crops, s, s, 3]

  def records_from(position):
    return records.epoch(tf.constant(0, tf.int64)).skip(position).enumerate(start=position)

  def example(position, record):
    ex = records.load(record)
    return {"image": preprocess(ex["image"]), "label": ex["label"], "mask": tf.constant(True),
            "_pos": position}

  ds = records_from(0).map(example, num_parallel_calls=sources.available_cores())
  if source.may_contain_corrupt_files and config.skip_corrupt_images:
    ds = ds.ignore_errors(log_warning=True)
  if records.num_examples * np.prod(image_shape) <= EVAL_CACHE_BYTES:
    ds = ds.cache()  # Later evals read the crops from memory.
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros(image_shape, tf.uint8), "label": tf.constant(0, tf.int32),
      "mask": tf.constant(False), "_pos": tf.constant(-1, tf.int64)}).repeat()
  ds = ds.concatenate(padding).take(total).batch(local_batch).prefetch(tf.data.AUTOTUNE)
  return _options(ds), records.num_examples, _Replay(records_from, example, records.describe)


# ----------------------------------------------------------------------------
# The numpy iterator, and naming the files that fail.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Replay:
  """Rebuilds single examples of a stream eagerly, to name the ones that fail."""
  records_from: Callable[[int], tf.data.Dataset]  # position -> (position, record)s
  example: Callable  # (position, record) -> example dict; raises if undecodable
  describe: Callable[[object], str]

  def failures(self, position, count):
    """Messages for the examples in [position, position + count) that fail."""
    messages = []
    for pos, record in self.records_from(position).take(count):
      try:
        self.example(pos, record)
      except (tf.errors.OpError, ValueError) as e:
        text = e.message if isinstance(e, tf.errors.OpError) else str(e)
        messages.append(f"{self.describe(record)}: {text.strip().splitlines()[0]}")
    return messages

  def name(self, position):
    for _, record in self.records_from(position).take(1):
      return self.describe(record)
    return f"position {position}"


class BatchIterator(collections.abc.Iterator):
  """Numpy batches from a tf.data pipeline, with corrupt-file bookkeeping.

  A file that cannot be decoded either stops the iterator with a ValueError
  naming it or, with config.skip_corrupt_images (image folders), is dropped,
  named in the log and counted in `num_skipped`. (A skipped training example
  shifts later batches by one, so resuming is exact only for runs that
  skipped nothing.)
  """

  def __init__(self, ds, *, start_position, batch_size, replay: _Replay,
               num_real: Optional[int] = None):
    self._it = ds.as_numpy_iterator()
    self._next = start_position  # Position of the next example expected.
    self._batch_size = batch_size
    self._replay = replay
    self._num_real = num_real  # Eval: how many real examples the pass holds.
    self.num_skipped = 0
    self.skipped: list[str] = []  # Names of the examples skipped (each once).

  def __next__(self) -> dict:
    try:
      batch = next(self._it)
    except StopIteration:
      if self._num_real is not None:  # Eval: examples missing at the very end.
        self._skipped(range(self._next, self._num_real))
        self._next = self._num_real  # Count them once, however often next() is called.
      raise
    except tf.errors.OpError:
      # Batches come in order, so the culprit is in the batch starting here.
      failures = self._replay.failures(self._next, self._batch_size)
      if not failures:
        raise
      raise ValueError(
          "Could not load " + "; ".join(failures) + "\nFix or remove the file, or set "
          "config.skip_corrupt_images=True to skip (and count) such files.") from None
    positions = batch.pop("_pos")
    real = positions[positions >= 0]
    if real.size:
      if real.size != real[-1] + 1 - self._next:  # Only with ignore_errors.
        self._skipped(sorted(set(range(self._next, int(real[-1]))) - set(real.tolist())))
      self._next = int(real[-1]) + 1
    return batch

  def _skipped(self, positions):
    positions = list(positions)
    if not positions:
      return
    self.num_skipped += len(positions)
    names = [self._replay.name(p) for p in positions[:100]]
    self.skipped.extend(n for n in dict.fromkeys(names) if n not in self.skipped)
    logging.warning("Skipped %d undecodable image(s) (config.skip_corrupt_images; %d so far): %s",
                    len(positions), self.num_skipped, ", ".join(names) or "...")
