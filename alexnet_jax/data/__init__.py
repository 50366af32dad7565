"""Input data: sources behind a registry, host and device augmentation, batch iterators.

    from alexnet_jax import data
    info = data.dataset_info(config)            # classes, resolved splits, sizes
    it = data.create_train_iterator(config)     # this process's slice of each global batch
    for batch in data.create_eval_iterator(config): ...
"""

# The sources that need no TensorFlow register here; the rest on first use.
from alexnet_jax.data import fake  # noqa: F401
from alexnet_jax.data import prepared  # noqa: F401
from alexnet_jax.data.iterators import available_cores
from alexnet_jax.data.iterators import create_eval_iterator
from alexnet_jax.data.iterators import create_train_iterator
from alexnet_jax.data.iterators import num_eval_batches
from alexnet_jax.data.sources import DatasetInfo
from alexnet_jax.data.sources import dataset_info
from alexnet_jax.data.sources import register
from alexnet_jax.data.sources import with_resolved_splits


def device_preprocessing(config, info: DatasetInfo):
  """(train augment, eval crops, stored size) to run in the steps, or Nones when the
  host already delivers final crops."""
  if not info.stored_size:
    return None, None, None
  from alexnet_jax.data import device_augment  # pylint: disable=g-import-not-at-top
  return device_augment.train_fn(config), device_augment.eval_fn(config), info.stored_size
