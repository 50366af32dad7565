"""Host-side input pipelines: a dataset -> per-process numpy batches.

Three promises, each tested:

* Exact eval. Each process reads its own slice of the eval split (TFDS
  `split_for_jax_process`, or a stride of the file list for folders), pads its
  last batches with zero images whose `mask` is False, and yields
  `num_eval_batches(config)` batches, the same number on every process. The
  real examples over all processes are the split, each exactly once.
* Determinism. Training order and augmentation are pure functions of
  `config.seed`: epoch e is shuffled with a seed derived from (seed, e), and an
  example's augmentation seed from (seed, its global index in the stream of
  global batches). Parallel map keeps order, so two runs with the same seed
  give identical batches.
* Exact, cheap resume. `create_train_iterator(config, start_step=k)` yields
  what an uninterrupted iterator yields from step k on. Because epochs are
  explicit, it starts at the right epoch directly, then skips the remaining
  examples as undecoded records (file names or encoded bytes): nothing
  skipped is decoded.

Sources (config.dataset): any prepared TFDS dataset (images read as encoded
bytes with `SkipDecoding`, so the inception crop can decode only its window),
the project's own offline builders in `alexnet_jax.datasets` (prepared on first
use), "imagefolder" (config.data_dir/<split>/<class>/*), and "fake" (random
uint8 images that skip decoding and augmentation: for throughput tests of the
rest of the system).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import logging
import math
import os
import re
import zlib
from typing import Callable, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import augment
from alexnet_jax import datasets as _project_datasets  # noqa: F401  (registers builders)
from alexnet_jax import runtime

runtime.hide_accelerators_from_tensorflow()

# Domain tags keep the seeds of the different random streams apart.
_SHUFFLE_TAG = 1
_AUGMENT_TAG = 2
_FAKE_TAG = 3

# The most shards a process interleaves when reading a TFDS split for
# training (a stand-in for per-epoch file shuffling, see train_share), and the
# fewest examples per shard: below that the shuffle buffer already mixes well.
_MAX_TFDS_SHARDS = 16
_MIN_SHARD_EXAMPLES = 4096

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Files that operating systems drop into folders; never treated as data.
_IGNORED_FILES = ("thumbs.db", "desktop.ini")

# The splits "imagefolder" maps to folder names (anything else is used as is).
_FOLDER_SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  class_names: list[str]
  num_train_examples: int
  num_eval_examples: int


# ----------------------------------------------------------------------------
# Seeds.
# ----------------------------------------------------------------------------


def _derived_seed(config_seed, tag, index):
  """A [2] int64 seed for (config.seed, stream tag, index), usable in graphs."""
  base = tf.constant([config_seed, tag], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def _epoch_order(n, config_seed, epoch):
  """The permutation of range(n) used in epoch `epoch` (eager or in a graph)."""
  seed = _derived_seed(config_seed, _SHUFFLE_TAG, epoch)
  return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed)


def _scalar_seed(seed):
  """A scalar int64 from a [2] seed, for APIs that take one (Dataset.shuffle)."""
  return tf.random.stateless_uniform([], seed, minval=None, maxval=None, dtype=tf.int64)


# ----------------------------------------------------------------------------
# Sources. Each gives class names, split sizes, and for one process's share of
# a split: its size n, its records (cheap to skip: indices, file names or
# encoded bytes) and `load`, which turns a record into {"image", "label"}.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Share:
  """One process's share of one split."""
  num_examples: int
  # epoch (int64 scalar tensor) -> Dataset of records for that epoch, in
  # training order (for eval: called once with epoch 0, in file order).
  records: Callable[[tf.Tensor], tf.data.Dataset]
  load: Callable[[object], dict]
  # A record -> words naming it in an error message.
  describe: Callable[[object], str]


class _Source:
  class_names: list[str]
  preprocessed = False  # True: `load` already gives final images (fake).
  may_contain_corrupt_files = False

  def split_size(self, split: str) -> int:
    raise NotImplementedError

  def train_share(self, split, process_index, process_count, *, seed,
                  shuffle_buffer_size) -> _Share:
    raise NotImplementedError

  def eval_share(self, split, process_index, process_count) -> _Share:
    raise NotImplementedError


class _IndexedSource(_Source):
  """A source with random access by index (files in a list, generated data).

  Each training epoch is a full permutation of the process's share, so no
  shuffle buffer is needed, and skipping examples is free.
  """

  def _indexed(self, split, process_index, process_count, *, for_eval):
    """(n, load(index) -> {"image", "label"}, describe(index) -> str) of a share."""
    raise NotImplementedError

  def train_share(self, split, process_index, process_count, *, seed, shuffle_buffer_size):
    del shuffle_buffer_size  # A full permutation per epoch.
    n, load, describe = self._indexed(split, process_index, process_count, for_eval=False)
    return _Share(n, lambda epoch: tf.data.Dataset.from_tensor_slices(
        _epoch_order(n, seed, epoch)), load, describe)

  def eval_share(self, split, process_index, process_count):
    n, load, describe = self._indexed(split, process_index, process_count, for_eval=True)
    return _Share(n, lambda epoch: tf.data.Dataset.range(n), load, describe)


def _check_enough_examples(n, process_count, split, name):
  if n < process_count:
    raise ValueError(f"Split {split!r} of {name} has {n} examples, fewer than the "
                     f"{process_count} processes reading it.")


# ---- TFDS ------------------------------------------------------------------


def _manual_download_help(builder, root):
  manual_dir = os.path.join(root, "downloads", "manual")
  if builder.name.startswith("imagenet2012"):
    return (
        f"\nImageNet cannot be downloaded automatically. Get ILSVRC2012_img_train.tar and "
        f"ILSVRC2012_img_val.tar from https://image-net.org/download-images (free registration), "
        f"put both tar files (unextracted) in {manual_dir}, then run once:\n"
        f"  tfds build {builder.name} --data_dir={root} --manual_dir={manual_dir}\n"
        f"(the tars are ~150 GB and the prepared copy about as much again; building takes "
        f"hours). Then train with "
        f"--config.tfds_data_dir={root}.")
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions:
    return (f"\nThis dataset needs a manual download: put the files below in {manual_dir}, "
            f"then run `tfds build {builder.name} --data_dir={root} --manual_dir={manual_dir}`.\n"
            f"{instructions.strip()}")
  return (f"\nPrepare it on a machine with network access (`tfds build {builder.name} "
          f"--data_dir=DIR`) and copy DIR/{builder.name} to {root}, or point "
          "config.tfds_data_dir at a directory that holds it.")


def _not_prepared_error(builder):
  root = str(builder.data_dir_root)
  return FileNotFoundError(
      f"TFDS dataset {builder.name!r} is not prepared in {root} (the TFDS data dir; set "
      "config.tfds_data_dir to use another)." + _manual_download_help(builder, root))


def _prepare_project_builder(builder):
  """Builds one of the project's offline datasets once (needs no network).

  A file lock keeps processes that share a disk from building it twice at the
  same time.
  """
  if builder.is_prepared():
    return
  lock_dir = os.path.dirname(builder.data_dir)
  os.makedirs(lock_dir, exist_ok=True)
  with open(os.path.join(lock_dir, ".prepare.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not builder.is_prepared():
      logging.info("Building %s in %s (offline, one-off).", builder.name, builder.data_dir)
      builder.download_and_prepare()


class _TfdsSource(_Source):
  """A TFDS dataset with "image" and "label" features."""

  def __init__(self, config):
    try:
      self.builder = tfds.builder(config.dataset, data_dir=config.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ValueError(
          f"config.dataset={config.dataset!r} is not a TFDS dataset. Allowed: a TFDS name "
          "(e.g. imagenet2012, tf_flowers, imagenette, cifar10), 'imagefolder' (with "
          "config.data_dir), 'fake', or 'sklearn_digits'.") from e
    if type(self.builder).__module__.startswith(_project_datasets.__name__):
      _prepare_project_builder(self.builder)
    features = self.builder.info.features
    missing = [k for k in ("image", "label") if k not in features]
    if missing:
      raise ValueError(
          f"TFDS dataset {config.dataset!r} has no {missing} feature(s) (it has "
          f"{sorted(features.keys())}); the pipeline needs 'image' and 'label'.")
    self.class_names = list(features["label"].names)
    self.name = config.dataset
    self.cache = config.cache_train

  def _read(self, split) -> tf.data.Dataset:
    """Records {"image": encoded bytes, "label": int32} of a split, in file order."""
    try:
      ds = self.builder.as_dataset(
          split=split, shuffle_files=False,
          decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(try_autocache=False))
    except AssertionError as e:  # TFDS's way of saying "not prepared".
      if "could not find data" in str(e):
        raise _not_prepared_error(self.builder) from e
      raise
    except ValueError as e:  # e.g. an unknown split name.
      raise ValueError(f"Cannot read split {split!r} of TFDS dataset {self.name!r} "
                       f"(splits: {sorted(self.builder.info.splits.keys())}): {e}") from e
    return ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})

  def _size_of(self, ds, split) -> int:
    n = int(ds.cardinality())
    if n < 0:
      raise ValueError(f"TFDS did not report the size of split {split!r} of {self.name!r}.")
    return n

  def split_size(self, split):
    try:
      return self.builder.info.splits[split].num_examples
    except (KeyError, ValueError):
      # Unknown to the metadata (not prepared, or under tfds.testing.mock_data):
      # reading says which, and the mock knows its own size.
      return self._size_of(self._read(split), split)

  def train_share(self, split, process_index, process_count, *, seed, shuffle_buffer_size):
    # Reading a TFDS split is sequential. To give each epoch a different order
    # without a random-access format, the process's share is cut into K shards
    # read side by side; each epoch draws the order in which the shards'
    # examples are merged from its own seed (a random interleaving, like
    # shuffling files), then shuffles that through a buffer.
    total = self.split_size(split)
    _check_enough_examples(total, process_count, split, repr(self.name))
    k = int(np.clip(total // (process_count * _MIN_SHARD_EXAMPLES), 1, _MAX_TFDS_SHARDS))
    subsplits = tfds.even_splits(split, n=process_count * k)
    shards = [self._read(s) for s in subsplits[process_index * k:(process_index + 1) * k]]
    sizes = [self._size_of(ds, split) for ds in shards]
    if self.cache:
      shards = [ds.cache() for ds in shards]
    shard_of_position = np.repeat(np.arange(k, dtype=np.int64), sizes)
    n = int(sum(sizes))
    buffer_size = max(1, min(n, int(shuffle_buffer_size)))

    def records(epoch):
      epoch_seed = _derived_seed(seed, _SHUFFLE_TAG, epoch)
      merge_seed, buffer_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, 2))
      choice = tf.random.experimental.stateless_shuffle(shard_of_position, merge_seed)
      ds = tf.data.Dataset.choose_from_datasets(shards, tf.data.Dataset.from_tensor_slices(choice))
      return ds.shuffle(buffer_size, seed=_scalar_seed(buffer_seed))

    return _Share(n, records, load=lambda r: r, describe=self._describe)

  def eval_share(self, split, process_index, process_count):
    ds = self._read(tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count))
    return _Share(self._size_of(ds, split), lambda epoch: ds, load=lambda r: r,
                  describe=self._describe)

  def _describe(self, record):
    return f"an example of {self.name!r} with label {int(record['label'])}"


# ---- Image folders -----------------------------------------------------------


_SLICE_RE = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\])?$")


def _slice_bound(text, n, default, split):
  text = text.strip()
  if not text:
    return default
  try:
    if text.endswith("%"):
      return int(round(float(text[:-1]) * n / 100.0))
    value = int(text)
  except ValueError:
    raise ValueError(f"Bad slice bound {text!r} in split {split!r}; use e.g. train[:90%] "
                     "or train[100:200].") from None
  return value + n if value < 0 else value


def _parse_folder_split(split):
  """"train[:90%]" -> ("train", start text, stop text)."""
  match = _SLICE_RE.match(split.strip())
  if not match:
    raise ValueError(f"Cannot parse split {split!r} for imagefolder; use NAME or NAME[a:b] "
                     "with a, b integers or percentages (e.g. train[90%:]).")
  return match["name"].strip(), match["start"] or "", match["stop"] or ""


@functools.lru_cache(maxsize=16)
def _list_folder(folder, signature, skip_bad):
  """Sorted (paths, class name of each path) of a split folder.

  `signature` (the class folders' mtimes) makes the cache forget a folder
  whose files changed.
  """
  del signature
  paths, classes, not_images = [], [], []
  for class_name in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
    class_dir = os.path.join(folder, class_name)
    found = 0
    for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
      name = entry.name
      if name.startswith(".") or name.lower() in _IGNORED_FILES or not entry.is_file():
        continue
      if not name.lower().endswith(IMAGE_EXTENSIONS):
        if not skip_bad:
          raise ValueError(
              f"{entry.path} is not an image file (allowed extensions: "
              f"{', '.join(IMAGE_EXTENSIONS)}). Remove it, or set "
              "config.skip_corrupt_images=True to skip and count such files.")
        not_images.append(entry.path)
        continue
      paths.append(entry.path)
      classes.append(class_name)
      found += 1
    if not found:
      raise ValueError(f"Class folder {class_dir} holds no image files "
                       f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images.")
  if not_images:
    logging.warning("Skipping %d non-image files in %s (config.skip_corrupt_images), e.g. %s.",
                    len(not_images), folder, not_images[0])
  return paths, classes


class _FolderSource(_IndexedSource):
  """config.data_dir/<split folder>/<class>/<image>, the "ImageFolder" layout.

  Classes are the sorted sub-folder names of the training split's folder (so
  labels agree between splits); every split's classes must be among them.
  """

  may_contain_corrupt_files = True

  def __init__(self, config):
    root = config.data_dir
    if not root:
      raise ValueError("config.dataset='imagefolder' needs config.data_dir: a folder holding "
                       "train/<class>/* and val/<class>/* images.")
    if not os.path.isdir(root):
      raise FileNotFoundError(f"config.data_dir={root!r} is not a directory.")
    self.root = root
    self.skip_bad = bool(config.skip_corrupt_images)
    self.name = f"imagefolder {root}"
    name, _, _ = _parse_folder_split(config.train_split)
    class_folder = self._folder(name)
    self.class_names = sorted(e.name for e in os.scandir(class_folder) if e.is_dir())
    if not self.class_names:
      raise ValueError(f"{class_folder} has no class sub-folders; expected "
                       f"{class_folder}/<class>/<image files>.")
    self._label_of = {c: i for i, c in enumerate(self.class_names)}

  def _folder(self, name):
    folder = os.path.join(self.root, _FOLDER_SPLIT_NAMES.get(name, name))
    if not os.path.isdir(folder) and os.path.isdir(os.path.join(self.root, name)):
      folder = os.path.join(self.root, name)  # e.g. a folder literally named "validation".
    if not os.path.isdir(folder):
      existing = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
      raise FileNotFoundError(
          f"Split {name!r} maps to {folder}, which does not exist (config.data_dir="
          f"{self.root!r} holds: {existing}). Expected {self.root}/train/<class>/* and "
          f"{self.root}/val/<class>/*; split names train, validation/val and test map to "
          "folders train, val and test.")
    return folder

  def files(self, split):
    """(paths, labels) of a (possibly sliced) split, in sorted order."""
    name, start, stop = _parse_folder_split(split)
    folder = self._folder(name)
    signature = tuple((e.name, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_dir())
    paths, classes = _list_folder(folder, signature, self.skip_bad)
    unknown = sorted(set(classes) - set(self._label_of))
    if unknown:
      raise ValueError(f"{folder} has classes {unknown} that the training split's folder "
                       f"does not; its classes are {self.class_names}.")
    if not paths:
      raise ValueError(f"{folder} holds no images.")
    n = len(paths)
    lo, hi = _slice_bound(start, n, 0, split), _slice_bound(stop, n, n, split)
    if not 0 <= lo < hi <= n:
      raise ValueError(f"Split {split!r} selects no images of the {n} in {folder}.")
    labels = np.array([self._label_of[c] for c in classes[lo:hi]], np.int32)
    return np.array(paths[lo:hi]), labels

  def split_size(self, split):
    return len(self.files(split)[0])

  def _indexed(self, split, process_index, process_count, *, for_eval):
    del for_eval  # Same files either way; the caller picks the preprocessing.
    paths, labels = self.files(split)
    _check_enough_examples(len(paths), process_count, split, self.name)
    # A stride, not a block: each process then sees every class.
    paths, labels = paths[process_index::process_count], labels[process_index::process_count]
    paths_t, labels_t = tf.constant(paths), tf.constant(labels)

    def load(index):
      return {"image": tf.io.read_file(paths_t[index]), "label": labels_t[index]}

    return len(paths), load, lambda index: str(paths[int(index)])


# ---- Fake ---------------------------------------------------------------------


class _FakeSource(_IndexedSource):
  """Random uint8 images and labels, the real element spec, no decoding.

  Images come from a small pool generated once, labels from a table drawn
  once: both pure functions of the example index, and `load` takes a whole
  vector of indices at once, so training batches cost one gather (fast enough
  to benchmark a fast accelerator).
  """

  preprocessed = True
  _POOL = 16

  def __init__(self, config):
    self.num_classes = int(config.num_classes or 1000)
    self.class_names = [str(i) for i in range(self.num_classes)]
    self.num_examples = int(config.fake_num_examples)
    if self.num_examples < 1:
      raise ValueError(f"config.fake_num_examples={self.num_examples} must be >= 1.")
    self.image_size = config.image_size
    self.eval_crops = config.eval_crops

  def split_size(self, split):
    return self.num_examples

  def _indexed(self, split, process_index, process_count, *, for_eval):
    _check_enough_examples(self.num_examples, process_count, split, "fake")
    crops = self.eval_crops if for_eval else 1
    split_tag = zlib.crc32(split.encode()) & 0x7FFFFFFF  # Other splits, other images.
    s = self.image_size
    pool = tf.random.stateless_uniform([self._POOL, s, s, 3], [_FAKE_TAG, split_tag],
                                       maxval=256, dtype=tf.int32)
    pool = tf.cast(pool, tf.uint8)
    labels = tf.constant(np.random.default_rng(split_tag).integers(
        0, self.num_classes, self.num_examples, dtype=np.int32))

    def load(index):  # A scalar or a vector; strided over processes, like folders.
      index = tf.cast(index, tf.int64) * process_count + process_index
      image = tf.gather(pool, index % self._POOL)
      if crops > 1:
        image = tf.stack([image] * crops, axis=-4)
      return {"image": image, "label": tf.gather(labels, index)}

    n = len(range(process_index, self.num_examples, process_count))
    return n, load, lambda index: f"fake example {int(index)}"


def _source(config) -> _Source:
  if config.dataset == "imagefolder":
    return _FolderSource(config)
  if config.dataset == "fake":
    return _FakeSource(config)
  return _TfdsSource(config)


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def get_dataset_info(config) -> DatasetInfo:
  """Class names and split sizes of config.dataset (train_split / eval_split)."""
  source = _source(config)
  names = list(source.class_names)
  if config.num_classes is not None and config.num_classes != len(names):
    raise ValueError(
        f"config.num_classes={config.num_classes} but {config.dataset!r} has {len(names)} "
        "classes; leave config.num_classes unset (None) to use the dataset's.")
  return DatasetInfo(num_classes=len(names), class_names=names,
                     num_train_examples=source.split_size(config.train_split),
                     num_eval_examples=source.split_size(config.eval_split))


def _processes(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
  return process_index, process_count


def _local_batch(global_batch, process_count, key):
  if global_batch < 1 or global_batch % process_count:
    raise ValueError(f"config.{key}={global_batch} must be a positive multiple of the "
                     f"number of processes ({process_count}): each process loads "
                     f"{key} / {process_count} examples per step.")
  return global_batch // process_count


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def _options(ds):
  options = tf.data.Options()
  options.deterministic = True  # Order is part of the determinism promise.
  # One thread per op: parallelism comes from running many elements at once,
  # which measured ~1.5-2x faster per core than letting ops spread out.
  options.threading.max_intra_op_parallelism = 1
  # No autotuning model: its thread sleeps for a period that doubles up to
  # 60 s, and destroying the iterator waits for that sleep to end (TF 2.21),
  # so the end of every run and of every eval pass stalled for up to a minute
  # (40 s at the end of the quickstart). A fixed map parallelism of one
  # element per core gave the same images/s on flowers-mini (inception:
  # 786-802 per core either way); prefetch(AUTOTUNE) keeps its own buffer
  # autotuner, which needs no model thread.
  options.autotune.enabled = False
  return ds.with_options(options)


def create_train_iterator(config, *, start_step=0, process_index=None,
                          process_count=None) -> "BatchIterator":
  """Infinite iterator of {"image": uint8 [b, S, S, 3], "label": int32 [b]}.

  b = config.batch_size // process_count. With start_step=k it yields exactly
  what an uninterrupted iterator yields from its k-th batch on (counting from
  0), without decoding the k * b examples it skips.
  """
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  process_index, process_count = _processes(process_index, process_count)
  local_batch = _local_batch(config.batch_size, process_count, "batch_size")
  source = _source(config)
  global_batch, seed = config.batch_size, int(config.seed)
  # Random-access sources share one global order: global batch t is the same
  # examples whatever the process count, and process p takes its slice of it,
  # so a 2-process run trains exactly like a 1-process run. Sequential TFDS
  # sources give each process its own shard instead (no process reads another's
  # files), which is what scales to a pod.
  global_order = isinstance(source, _IndexedSource)
  share = source.train_share(config.train_split, 0 if global_order else process_index,
                             1 if global_order else process_count,
                             seed=int(config.seed),
                             shuffle_buffer_size=int(config.shuffle_buffer_size))
  n = share.num_examples
  if global_order:
    _check_enough_examples(n, process_count, config.train_split, repr(config.dataset))
  preprocess = None if source.preprocessed else augment.train_preprocess_fn(config)

  def records_from(position):
    """Records of this process's stream from `position` on (no decoding)."""
    if not global_order:
      start_epoch, offset = divmod(position, n)
      ds = tf.data.Dataset.counter(start_epoch).flat_map(share.records).skip(offset)
      return ds.enumerate(start=position)
    # Walk the global stream (indices only, nothing loaded) from the start of
    # this step's global batch and keep this process's slice of every batch.
    step, within = divmod(position, local_batch)
    start = step * global_batch
    start_epoch, offset = divmod(start, n)
    ds = tf.data.Dataset.counter(start_epoch).flat_map(share.records).skip(offset)
    ds = ds.enumerate(start=start).filter(
        lambda g, record: (g % global_batch) // local_batch == process_index)
    return ds.skip(within).map(lambda g, record: record).enumerate(start=position)

  def example(position, record):
    ex = share.load(record)
    if preprocess is not None:
      # The index this example has among all processes' examples, in the order
      # of global batches: unique, and the same after a resume.
      step, i = position // local_batch, position % local_batch
      global_index = step * global_batch + process_index * local_batch + i
      ex["image"] = preprocess(ex["image"], _derived_seed(seed, _AUGMENT_TAG, global_index))
    return {"image": ex["image"], "label": ex["label"], "_pos": position}

  first = start_step * local_batch
  if source.preprocessed:  # Fake data: load whole batches with one gather.
    ds = records_from(first).batch(local_batch, drop_remainder=True).map(
        lambda pos, rec: {**share.load(rec), "_pos": pos})
  else:
    ds = records_from(first).map(example, num_parallel_calls=available_cores())
    if source.may_contain_corrupt_files and config.skip_corrupt_images:
      ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return BatchIterator(
      _options(ds), start_position=first, batch_size=local_batch,
      replay=_Replay(records_from, example, share.describe))


def num_eval_batches(config, process_count=None) -> int:
  """Batches every process yields in one eval pass: ceil(split size / eval_batch_size)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  _local_batch(config.eval_batch_size, process_count, "eval_batch_size")
  return _num_eval_batches(_source(config), config)


def _num_eval_batches(source, config):
  return math.ceil(source.split_size(config.eval_split) / config.eval_batch_size)


def create_eval_iterator(config, *, process_index=None, process_count=None) -> "BatchIterator":
  """One pass over the eval split: {"image", "label", "mask"} batches, padded.

  image: uint8 [b, S, S, 3], or [b, 10, S, S, 3] when config.eval_crops == 10;
  label: int32 [b]; mask: bool [b], False on padding (zero images, label 0).
  b = config.eval_batch_size // process_count. Every process yields
  num_eval_batches(config) batches; the real examples of all processes
  together are the split, each once.
  """
  process_index, process_count = _processes(process_index, process_count)
  local_batch = _local_batch(config.eval_batch_size, process_count, "eval_batch_size")
  source = _source(config)
  share = source.eval_share(config.eval_split, process_index, process_count)
  num_batches = _num_eval_batches(source, config)
  total = num_batches * local_batch
  if share.num_examples > total:  # Cannot happen with even splits; guards the padding.
    raise AssertionError(f"Process {process_index} has {share.num_examples} eval examples, "
                         f"more than {num_batches} batches of {local_batch} hold.")
  preprocess = None if source.preprocessed else augment.eval_preprocess_fn(config)
  s = config.image_size
  image_shape = [s, s, 3] if config.eval_crops == 1 else [config.eval_crops, s, s, 3]

  def records_from(position):
    return share.records(tf.constant(0, tf.int64)).skip(position).enumerate(start=position)

  def example(position, record):
    ex = share.load(record)
    image = ex["image"] if preprocess is None else preprocess(ex["image"])
    return {"image": image, "label": ex["label"], "mask": tf.constant(True), "_pos": position}

  ds = records_from(0).map(example, num_parallel_calls=available_cores())
  skip_bad = source.may_contain_corrupt_files and config.skip_corrupt_images
  if skip_bad:
    ds = ds.ignore_errors(log_warning=True)
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros(image_shape, tf.uint8), "label": tf.constant(0, tf.int32),
      "mask": tf.constant(False), "_pos": tf.constant(-1, tf.int64)}).repeat()
  ds = ds.concatenate(padding).take(total).batch(local_batch).prefetch(tf.data.AUTOTUNE)
  return BatchIterator(
      _options(ds), start_position=0, batch_size=local_batch, num_real=share.num_examples,
      replay=_Replay(records_from, example, share.describe))


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
      except tf.errors.OpError as e:
        messages.append(f"{self.describe(record)}: {e.message.strip()}")
    return messages

  def name(self, position):
    for _, record in self.records_from(position).take(1):
      return self.describe(record)
    return f"position {position}"


class BatchIterator:
  """Numpy batches from a tf.data pipeline, with corrupt-file bookkeeping.

  A file that cannot be decoded either stops the iterator with a ValueError
  that names it or, with config.skip_corrupt_images (image folders), is
  dropped, logged by name and counted in `num_skipped`. (A skipped training
  example shifts later batches by one example, so resuming is exact only for
  runs that skipped nothing; the log says when that happened.)
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

  def __iter__(self) -> Iterator[dict]:
    return self

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
