"""Input data: sources behind one table, host and device augmentation, batch iterators.

    from alexnet_jax import data
    info = data.dataset_info(config)            # classes, resolved splits, sizes
    it = data.create_train_iterator(config)     # this process's slice of each global batch
    for batch in data.create_eval_iterator(config): ...
"""

from alexnet_jax.data import fake
from alexnet_jax.data import prepared
from alexnet_jax.data import sources
from alexnet_jax.data.iterators import create_eval_iterator
from alexnet_jax.data.iterators import create_train_iterator
from alexnet_jax.data.iterators import num_eval_batches
from alexnet_jax.data.sources import DatasetInfo
from alexnet_jax.data.sources import available_cores
from alexnet_jax.data.sources import dataset_info
from alexnet_jax.data.sources import register
from alexnet_jax.data.sources import with_resolved_splits


def _folder():
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.hide_accelerators_from_tensorflow()  # Before folder imports TensorFlow.
  from alexnet_jax.data import folder  # pylint: disable=g-import-not-at-top
  return folder.FolderSource


def _tfds():
  from alexnet_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.TfdsSource


# The source table: config.dataset -> its class (None: any other name, a TFDS
# dataset). Sources that import TensorFlow are imported when first named, so
# runs on fake or prepared data never load it.
sources.SOURCES.update({
    "fake": lambda: fake.FakeSource, "prepared": lambda: prepared.PreparedSource,
    "imagefolder": _folder, None: _tfds})


def device_preprocessing(config, info: DatasetInfo):
  """(train augment, eval crops, stored size) to run in the steps, or Nones when the
  host already delivers final crops."""
  if not info.stored_size:
    return None, None, None
  from alexnet_jax.data import device_augment  # pylint: disable=g-import-not-at-top
  return device_augment.train_fn(config), device_augment.eval_fn(config), info.stored_size
