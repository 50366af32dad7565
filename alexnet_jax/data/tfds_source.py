"""Any TFDS dataset with "image" and "label" features.

Datasets TFDS can download are built on first use (`prepare_if_needed` says what
to run when that needs a manual step). Training reads a split in one global
order that every process computes: up to 16 shards read side by side, merged in
an order drawn per epoch, then a shuffle buffer. Every process reads all records
and keeps its slice of each global batch before decoding; at ImageNet scale,
prepare the data once (`python -m alexnet_jax.prepare`) for random access.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import runtime
from alexnet_jax.data import sklearn_digits  # noqa: F401  (registers the builder)
from alexnet_jax.data import sources

runtime.quiet_tfds(tfds)

# The most shards merged per epoch, and the fewest examples per shard (below
# that the shuffle buffer already mixes well).
MAX_SHARDS = 16
MIN_SHARD_EXAMPLES = 4096

# Hosts TFDS downloads public datasets from; reaching none means offline.
_DOWNLOAD_HOSTS = ("storage.googleapis.com", "download.tensorflow.org")


def _online(timeout: float = 3.0) -> bool:
  for host in _DOWNLOAD_HOSTS:
    try:
      with socket.create_connection((host, 443), timeout=timeout):
        return True
    except OSError:
      continue
  return False


def _manual_download_help(builder, root):
  manual_dir = os.path.join(root, "downloads", "manual")
  if builder.name.startswith("imagenet2012"):
    return (
        f"\nImageNet cannot be downloaded automatically. Get ILSVRC2012_img_train.tar and "
        f"ILSVRC2012_img_val.tar from https://image-net.org/download-images (free registration), "
        f"put both tar files (unextracted) in {manual_dir}, then run once:\n"
        f"  tfds build {builder.name} --data_dir={root} --manual_dir={manual_dir}\n"
        "(the tars are ~150 GB and the prepared copy about as much again; building takes "
        f"hours). Then train with --config.tfds_data_dir={root}.")
  return (f"\nThis dataset needs a manual download: put the files below in {manual_dir}, "
          f"then run `tfds build {builder.name} --data_dir={root} --manual_dir={manual_dir}`.\n"
          f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")


@contextlib.contextmanager
def _build_lock(builder):
  """One builder at a time per data dir (processes sharing a disk build once)."""
  lock_dir = os.path.dirname(builder.data_dir)
  os.makedirs(lock_dir, exist_ok=True)
  with open(os.path.join(lock_dir, ".prepare.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


@contextlib.contextmanager
def _quiet_before_first_build():
  """Drops TFDS's "Variant folder ... has no dataset_info.json": before a first
  build, that is the expected state of the folder being built, not a problem."""
  quiet = lambda record: not record.getMessage().startswith("Variant folder")  # noqa: E731
  logging.getLogger("absl").addFilter(quiet)
  try:
    yield
  finally:
    logging.getLogger("absl").removeFilter(quiet)


def prepare_if_needed(builder) -> None:
  """Builds a TFDS dataset on first use when that needs no manual step."""
  if builder.is_prepared():
    return
  root = str(builder.data_dir_root)
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    raise FileNotFoundError(f"TFDS dataset {builder.name!r} is not prepared in {root}."
                            + _manual_download_help(builder, root))
  offline_builder = type(builder).__module__.startswith("alexnet_jax.")
  if not offline_builder and not _online():
    raise FileNotFoundError(
        f"TFDS dataset {builder.name!r} is not prepared in {root} and this machine cannot "
        "download it (no network). On a machine with network access run "
        f"`tfds build {builder.name} --data_dir=DIR`, then copy DIR/{builder.name} to {root} "
        "(or set config.tfds_data_dir=DIR).")
  with _build_lock(builder):
    if builder.is_prepared():
      return
    logging.info("Building TFDS dataset %s in %s (once)%s.", builder.name, root,
                 "" if offline_builder else ", downloading it first")
    try:
      builder.download_and_prepare()
    except OSError as e:
      raise FileNotFoundError(
          f"Downloading and preparing TFDS dataset {builder.name!r} failed: {e}. Run "
          f"`tfds build {builder.name} --data_dir={root}` to see the details.") from e


class TfdsSource(sources.Source):
  """A TFDS dataset; reads images as encoded bytes, so crops decode only their window."""

  def __init__(self, config):
    try:
      self.builder = tfds.builder(config.dataset, data_dir=config.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(
          f"config.dataset={config.dataset!r} is not a TFDS dataset nor one of "
          f"{sorted(n for n in sources.SOURCES if n)}. Allowed: a TFDS name (e.g. "
          "imagenet2012, tf_flowers, imagenette, cifar10), 'sklearn_digits', 'imagefolder' "
          "(with config.data_dir), 'prepared' (with config.data_dir) or 'fake'.") from e
    self.name = config.dataset
    # Under tfds.testing.mock_data nothing is prepared, yet everything reads.
    with _quiet_before_first_build():
      self._mocked = not self.builder.is_prepared() and self._reads_anyway()
      if not self._mocked:
        prepare_if_needed(self.builder)
    features = self.builder.info.features
    missing = [k for k in ("image", "label") if k not in features]
    if missing:
      raise ValueError(
          f"TFDS dataset {config.dataset!r} has no {missing} feature(s) (it has "
          f"{sorted(features.keys())}); the pipeline needs 'image' and 'label'.")
    self.class_names = list(features["label"].names)

  def _reads_anyway(self) -> bool:
    try:
      self.builder.as_dataset(split=list(self.builder.info.splits.keys() or ["train"])[0])
      return True
    except Exception:  # pylint: disable=broad-except
      return False

  def split_names(self):
    return sorted(self.builder.info.splits.keys())

  def fingerprint(self, train_split, eval_split):
    """TFDS data is versioned: its name and version (full_name) name the examples."""
    return f"{self.builder.info.full_name}:{train_split}:{eval_split}"

  def _read(self, split) -> tf.data.Dataset:
    """Records {"image": encoded bytes, "label": int32} of a split, in file order."""
    try:
      ds = self.builder.as_dataset(
          split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(try_autocache=False))
    except ValueError as e:  # e.g. an unknown split name.
      raise ValueError(f"Cannot read split {split!r} of TFDS dataset {self.name!r} "
                       f"(splits: {self.split_names()}): {e}") from e
    return ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})

  def _size_of(self, ds, split) -> int:
    n = int(ds.cardinality())
    if n < 0:
      raise ValueError(f"TFDS did not report the size of split {split!r} of {self.name!r}.")
    return n

  def split_size(self, split):
    if not self._mocked:
      try:
        return self.builder.info.splits[split].num_examples
      except (KeyError, ValueError):
        pass
    return self._size_of(self._read(split), split)

  def train_records(self, split, *, seed, shuffle_buffer_size):
    total = self.split_size(split)
    k = int(np.clip(total // MIN_SHARD_EXAMPLES, 1, MAX_SHARDS))
    shards = [self._read(s) for s in tfds.even_splits(split, n=k)]
    sizes = [self._size_of(ds, split) for ds in shards]
    shard_of_position = np.repeat(np.arange(k, dtype=np.int64), sizes)
    buffer_size = max(1, min(total, int(shuffle_buffer_size)))

    def records(epoch):
      epoch_seed = sources.derived_seed(seed, sources.SHUFFLE_TAG, epoch)
      merge_seed, buffer_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, 2))
      choice = tf.random.experimental.stateless_shuffle(shard_of_position, merge_seed)
      ds = tf.data.Dataset.choose_from_datasets(shards, tf.data.Dataset.from_tensor_slices(choice))
      scalar_seed = tf.random.stateless_uniform([], buffer_seed, minval=None, maxval=None,
                                                dtype=tf.int64)
      return ds.shuffle(buffer_size, seed=scalar_seed)

    return sources.Records(int(sum(sizes)), records, load=lambda r: r, describe=self._describe)

  def eval_records(self, split, process_index, process_count):
    ds = self._read(tfds.split_for_jax_process(split, process_index=process_index,
                                               process_count=process_count))
    return sources.Records(self._size_of(ds, split), lambda epoch: ds, load=lambda r: r,
                         describe=self._describe)

  def _describe(self, record):
    return f"an example of {self.name!r} with label {int(record['label'])}"
