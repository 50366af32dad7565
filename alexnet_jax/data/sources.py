"""Data sources behind one table, and the seeds that order and augment them.

A source is a dataset: class names, split names and sizes, and, per split, the
records of an epoch in one global order that every process computes alike.
`config.dataset` picks it from the table in `alexnet_jax/data/__init__.py`; any
other name is a TFDS dataset (adding a source: docs/extending.md). Sources with
their own iterators (prepared, fake) never import TensorFlow; the others give
`Records` and get the shared tf.data pipeline (`alexnet_jax.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Callable

# Domain tags keep the seeds of the different random streams apart.
SHUFFLE_TAG = 1
AUGMENT_TAG = 2
FAKE_TAG = 3

# Split names that hold validation data, best first; the eval split when
# config.eval_split is unset.
VALIDATION_SPLITS = ("validation", "val", "test")


def derived_seed(config_seed, tag, index):
  """A [2] int64 seed for (config.seed, stream tag, index), usable inside graphs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  base = tf.constant([config_seed, tag], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def epoch_order(n, config_seed, epoch):
  """The permutation of range(n) that epoch `epoch` visits."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seed = derived_seed(config_seed, SHUFFLE_TAG, epoch)
  return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed)


@dataclasses.dataclass
class Records:
  """The records of one split that one reader goes through.

  epoch(e) -> Dataset of records in reading order (training: the epoch's
  global order; eval: file order, called with epoch 0). Records are cheap to
  skip (indices, file names, encoded bytes); `load` turns one into
  {"image", "label"}; `describe` names one in an error message.
  """
  num_examples: int
  epoch: Callable[[tf.Tensor], tf.data.Dataset]
  load: Callable[[object], dict]
  describe: Callable[[object], str]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a run needs to know about its data before the first batch."""
  name: str
  num_classes: int
  class_names: list[str]
  train_split: str
  eval_split: str
  num_train_examples: int
  num_eval_examples: int
  eval_carved_from_train: bool = False
  # Prepared data: images arrive uncropped at this size and are cropped on the device.
  stored_size: int | None = None
  # A digest of what the examples are (the source's `fingerprint()`), None if it has none.
  fingerprint: str | None = None

  def identity(self) -> dict:
    """What binds a run to its data: checked on every resume (workdir.DATA_FILE)."""
    return {"class_names": list(self.class_names), "train_split": self.train_split,
            "eval_split": self.eval_split, "num_train_examples": self.num_train_examples,
            "num_eval_examples": self.num_eval_examples, "fingerprint": self.fingerprint}

  def describe(self) -> str:
    carved = " (carved from the training data: the dataset has no validation split)"
    return (f"{self.name}: {self.num_classes} classes; train split {self.train_split!r} "
            f"({self.num_train_examples} examples), eval split {self.eval_split!r} "
            f"({self.num_eval_examples} examples)"
            + (carved if self.eval_carved_from_train else ""))


class Source:
  """Base class of data sources; see the module docstring."""

  name: str = ""
  class_names: list[str] = []
  # Records may fail to decode (files on disk): the pipeline names them, or
  # skips and counts them with config.skip_corrupt_images.
  may_contain_corrupt_files = False

  def split_names(self) -> list[str]:
    """Splits the data has (plain names, no slices)."""
    raise NotImplementedError

  def split_size(self, split: str) -> int:
    raise NotImplementedError

  def train_records(self, split: str, *, seed: int, shuffle_buffer_size: int) -> Records:
    """All of a split's records per epoch, in the global training order."""
    raise NotImplementedError

  def eval_records(self, split: str, process_index: int, process_count: int) -> Records:
    """One process's part of a split for evaluation (parts cover the split once)."""
    raise NotImplementedError

  def fingerprint(self, train_split: str, eval_split: str) -> str | None:
    """A digest of the examples of both splits (file lists, record layout), or None."""
    del train_split, eval_split
    return None

  # Sources with their own iterators override these (see pipeline.py).
  train_iterator = None
  eval_iterator = None


# config.dataset -> a function returning its Source class (see data/__init__.py).
SOURCES: dict[str | None, Callable[[], type]] = {}


def register(name: str):
  """Class decorator: `config.dataset == name` selects this source."""

  def wrap(cls):
    SOURCES[name] = lambda: cls
    cls.name = cls.name or name
    return cls

  return wrap


def source_class(name: str) -> type:
  """The class the table gives `name`; any other name is a TFDS dataset."""
  return SOURCES.get(name, SOURCES[None])()


def available_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def create(config) -> Source:
  """The source config.dataset names; unregistered names are TFDS datasets."""
  return source_class(config.dataset)(config)


# ----------------------------------------------------------------------------
# Splits.
# ----------------------------------------------------------------------------

_SLICE_RE = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\])?$")


def parse_split(split: str) -> tuple[str, str, str]:
  """"train[:90%]" -> ("train", "", "90%"); "val" -> ("val", "", "")."""
  match = _SLICE_RE.match(split.strip())
  if not match:
    raise ValueError(f"Cannot parse split {split!r}; use NAME or NAME[a:b] with a, b "
                     "integers or percentages (e.g. train[90%:]).")
  return match["name"].strip(), match["start"] or "", match["stop"] or ""


def resolve_splits(config, source: Source) -> tuple[str, str, bool]:
  """(train split, eval split, whether eval is carved out of the training data).

  config.eval_split wins when set. Otherwise the data's own validation split
  (validation, val or test, in that order), and only when it has none is the
  last config.eval_holdout of the training split held out for evaluation.
  """
  train = config.train_split
  if config.eval_split:
    return train, config.eval_split, False
  names = source.split_names()
  for name in VALIDATION_SPLITS:
    if name in names:
      return train, name, False
  base, start, stop = parse_split(train)
  if start or stop:
    raise ValueError(
        f"{source.name} has no validation split (splits: {names}) and config.train_split="
        f"{train!r} is already a slice: set config.eval_split to the examples to evaluate on.")
  cut = 100 - round(100 * config.eval_holdout)
  logging.warning("%s has no validation split (splits: %s): holding out the last %d%% of %r "
                  "for evaluation.", source.name, names, 100 - cut, base)
  return f"{base}[:{cut}%]", f"{base}[{cut}%:]", True


def dataset_info(config) -> DatasetInfo:
  """Class names, resolved splits and their sizes for config.dataset."""
  source = create(config)
  names = list(source.class_names)
  if len(names) < 2:
    raise ValueError(
        f"{source.name or config.dataset} has {len(names)} class ({names}): a classifier "
        "needs at least 2 (with one, every prediction is right and nothing is learned). "
        "Check config.data_dir: it should hold train/<class>/* with one folder per class.")
  if config.num_classes is not None and config.num_classes != len(names):
    raise ValueError(
        f"config.num_classes={config.num_classes} but {config.dataset!r} has {len(names)} "
        "classes; leave config.num_classes unset (None) to use the dataset's.")
  train, evaluation, carved = resolve_splits(config, source)
  return DatasetInfo(name=source.name or config.dataset, num_classes=len(names),
                     class_names=names, train_split=train, eval_split=evaluation,
                     num_train_examples=source.split_size(train),
                     num_eval_examples=source.split_size(evaluation),
                     eval_carved_from_train=carved,
                     stored_size=getattr(source, "stored_size", None),
                     fingerprint=source.fingerprint(train, evaluation))


def with_resolved_splits(config, info: DatasetInfo):
  """A copy of `config` naming the splits `info` resolved (for config.json and resumes)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train_split = info.train_split
    config.eval_split = info.eval_split
  return config
