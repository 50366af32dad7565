"""The data front door: a config -> this process's batches.

A source with its own iterators (fake data, prepared data) serves them
directly; every other source goes through the shared tf.data pipeline, which
is imported only then. So a run on fake or prepared data never imports
TensorFlow (its import is most of a short run's start-up).
"""

from __future__ import annotations

import math

from alexnet_jax.data import sources


def processes(process_index, process_count) -> tuple[int, int]:
  """(process index, process count), JAX's where not given."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
  return process_index, process_count


def local_batch(global_batch, process_count, key) -> int:
  """Examples per process of a global batch, which must split evenly."""
  if global_batch < 1 or global_batch % process_count:
    raise ValueError(f"config.{key}={global_batch} must be a positive multiple of the "
                     f"number of processes ({process_count}): each process loads "
                     f"{key} / {process_count} examples per step.")
  return global_batch // process_count


def create_train_iterator(config, *, start_step=0, process_index=None, process_count=None):
  """Infinite iterator of {"image": uint8 [b, S, S, 3], "label": int32 [b]}.

  b = config.batch_size // process_count. With start_step=k it yields exactly
  what an uninterrupted iterator yields from its k-th batch on.
  """
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  process_index, process_count = processes(process_index, process_count)
  local_batch(config.batch_size, process_count, "batch_size")
  source = sources.create(config)
  if source.train_iterator is not None:
    return source.train_iterator(config, start_step=start_step, process_index=process_index,
                                 process_count=process_count)
  from alexnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.create_train_iterator(config, source, start_step=start_step,
                                        process_index=process_index,
                                        process_count=process_count)


def num_eval_batches(config, process_count=None) -> int:
  """Batches every process yields in one eval pass: ceil(split size / eval_batch_size)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  local_batch(config.eval_batch_size, process_count, "eval_batch_size")
  source = sources.create(config)
  eval_split = sources.resolve_splits(config, source)[1]
  return math.ceil(source.split_size(eval_split) / config.eval_batch_size)


def create_eval_iterator(config, *, process_index=None, process_count=None):
  """One pass over the eval split: {"image", "label", "mask"} batches, padded.

  image: uint8 [b, S, S, 3], or [b, 10, S, S, 3] when config.eval_crops == 10;
  label: int32 [b]; mask: bool [b], False on padding (zero images, label 0).
  b = config.eval_batch_size // process_count. Every process yields
  num_eval_batches(config) batches; together their real examples are the
  split, each once.
  """
  process_index, process_count = processes(process_index, process_count)
  local_batch(config.eval_batch_size, process_count, "eval_batch_size")
  if sources.source_class(config.dataset).eval_iterator is not None:
    return sources.create(config).eval_iterator(config, process_index=process_index,
                                                process_count=process_count)
  from alexnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.create_eval_iterator(config, process_index=process_index,
                                       process_count=process_count)
