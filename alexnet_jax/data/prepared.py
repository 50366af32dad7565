"""Prepared datasets: decoded uint8 images of one fixed size, read by random access.

`python -m alexnet_jax.prepare` converts any source (a TFDS dataset, an image
folder, the offline digits) once; training then reads it with
`--config.dataset=prepared --config.data_dir=DIR`, and the host does little
more than copy bytes: crops, flips and lighting happen on the device
(`alexnet_jax.data.device_augment`).

Layout of DIR (chosen by measurement, see README "Feeding the accelerator"):

    dataset.json                    written last; its absence means "incomplete"
    train-00000.images              uint8 [n, R, R, 3], C order, no header
    train-00000.labels              int32 [n], little endian
    validation-00000.images ...

Each image is stored as the paper stored ImageNet: the shorter side resized to
R = config.resize_size (antialiased), then the central R x R. The eval split
follows config.eval_resize (stretch: the whole image resized to R x R).
Fixed-size records make an example's bytes one `pread` at a known offset,
several times cheaper per image than ArrayRecord or decoding small JPEGs
(benchmarks/record_formats.py; figures in the README).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import queue
import threading
from typing import Iterator

import numpy as np
from etils import epath

from alexnet_jax.data import sources

FORMAT = "alexnet_jax.prepared"
VERSION = 1
MANIFEST = "dataset.json"
SPLITS = ("train", "validation")


class NotPreparedError(FileNotFoundError):
  """DIR is not a complete prepared dataset."""


@dataclasses.dataclass(frozen=True)
class Shard:
  images: epath.Path
  labels: np.ndarray
  start: int  # Index of its first example in the split.


def read_manifest(root) -> dict:
  root = epath.Path(root)
  path = root / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError:
    partial = (root / ".progress.json").exists()
    hint = (": its preparation was interrupted; rerun the same `python -m alexnet_jax.prepare` "
            "command to finish it." if partial else
            ". Write one with `python -m alexnet_jax.prepare --config=CONFIG --output=DIR`.")
    raise NotPreparedError(
        f"{root} is not a complete prepared dataset (no {MANIFEST}){hint}") from None
  except ValueError as e:
    raise NotPreparedError(f"Cannot read {path}: {e}. Rerun the prepare command.") from e
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise NotPreparedError(f"{path} is not a version-{VERSION} {FORMAT} manifest.")
  return manifest


def _inside(root, name) -> epath.Path:
  """root/name for a file that root's manifest lists; refused if it leads outside root."""
  name = str(name)
  path = epath.Path(root) / name
  escapes = os.path.isabs(name) or "://" in name or ".." in name.split("/")
  if not escapes and "://" not in os.fspath(root):  # Symlinks too, where they can be resolved.
    real_root = os.path.realpath(root)
    escapes = os.path.commonpath([real_root, os.path.realpath(path)]) != real_root
  if escapes:
    raise ValueError(f"{root}/{MANIFEST} lists {name!r}, a path outside {root}: a prepared "
                     "dataset reads only files inside its directory; rerun prepare.")
  return path


def _rerun(root, message: str) -> NotPreparedError:
  return NotPreparedError(f"{message}; rerun the `python -m alexnet_jax.prepare` command that "
                          f"wrote {root}.")


def _open_shard(root, shard: dict, record: int, num_classes: int, start: int) -> Shard:
  """One shard of the manifest, checked: its files inside root, their sizes, its labels."""
  images, labels_file = _inside(root, shard["images"]), _inside(root, shard["labels"])
  count = int(shard["count"])
  try:
    raw = labels_file.read_bytes()
    size = images.stat().length  # One stat: the images are read later, by offset.
  except FileNotFoundError:
    missing = images if labels_file.exists() else labels_file
    raise _rerun(root, f"The shard file {missing} is missing") from None
  for path, got, per in ((labels_file, len(raw), 4), (images, size, record)):
    if got != count * per:
      raise _rerun(root, f"The shard file {path} holds {got} bytes, not the {count} records of "
                         f"{per} bytes that {MANIFEST} says (truncated, or {MANIFEST} edited)")
  labels = np.frombuffer(raw, "<i4")
  low, high = int(labels.min(initial=0)), int(labels.max(initial=0))
  if low < 0 or high >= num_classes:
    raise ValueError(f"The shard file {labels_file} holds labels from {low} to {high}, outside "
                     f"the {num_classes} classes of {MANIFEST} (0 to {num_classes - 1}); "
                     "rerun prepare.")
  return Shard(images, labels, start)


class _Reader:
  """Random access to one split: batches of examples by index, one pread each."""

  def __init__(self, root, manifest, split):
    self.size = int(manifest["image_size"])
    self.record = self.size * self.size * 3
    info = manifest["splits"][split]
    self.num_examples = int(info["num_examples"])
    self.shards = []
    start = 0
    for shard in info["shards"]:
      self.shards.append(_open_shard(root, shard, self.record, len(manifest["class_names"]),
                                     start))
      start += len(self.shards[-1].labels)
    if start != self.num_examples:
      raise NotPreparedError(f"{root}: the shards of split {split!r} hold {start} examples, "
                             f"the manifest says {self.num_examples}; rerun prepare.")
    self.labels = np.concatenate([s.labels for s in self.shards]).astype(np.int32)
    self._starts = np.array([s.start for s in self.shards])
    self._files = threading.local()

  def _file(self, shard_index):
    files = getattr(self._files, "open", None)
    if files is None:
      files = self._files.open = {}
    if shard_index not in files:
      path = self.shards[shard_index].images
      files[shard_index] = (os.open(path, os.O_RDONLY) if "://" not in os.fspath(path)
                            else path.open("rb"))
    return files[shard_index]

  def read(self, indices: np.ndarray, out: np.ndarray) -> None:
    """Copies examples `indices` into out[i] (uint8 [len(indices), R, R, 3])."""
    shard_of = np.searchsorted(self._starts, indices, side="right") - 1
    flat = out.reshape(len(indices), self.record)
    for i in np.argsort(indices, kind="stable"):  # In file order: sequential where possible.
      s = int(shard_of[i])
      offset = (int(indices[i]) - self.shards[s].start) * self.record
      f = self._file(s)
      if isinstance(f, int):
        if os.preadv(f, [flat[i]], offset) != self.record:
          raise OSError(f"{self.shards[s].images} is truncated; rerun prepare.")
      else:
        f.seek(offset)
        f.readinto(memoryview(flat[i]))


class _Batches:
  """Batches made on a background thread, `depth` ahead of the loop.

  `indices(t)` gives batch t's example indices and whatever extra arrays go
  with them (the eval mask).
  """

  def __init__(self, reader, indices_fn, batch_size, start, stop=None, depth=4):
    self._reader, self._indices, self._size = reader, indices_fn, batch_size
    self._next, self._stop = start, stop
    self._queue = queue.Queue(maxsize=depth)
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prepared-read")
    self._closed = False
    for _ in range(depth):
      self._submit()

  def _submit(self):
    if self._stop is not None and self._next >= self._stop:
      return
    self._queue.put(self._pool.submit(self._make, self._next))
    self._next += 1

  def _make(self, t):
    indices, extra = self._indices(t)
    r = self._reader.size
    image = np.zeros((self._size, r, r, 3), np.uint8)
    real = indices >= 0
    count = int(real.sum())  # Padding (index -1) only ever ends a batch.
    self._reader.read(indices[:count], image[:count])
    batch = {"image": image, "label": np.where(real, self._reader.labels[np.maximum(indices, 0)],
                                               0).astype(np.int32)}
    batch.update(extra)
    return batch

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    if self._queue.empty():
      raise StopIteration
    batch = self._queue.get().result()
    self._submit()
    return batch

  def close(self):
    self._pool.shutdown(wait=False, cancel_futures=True)


@sources.register("prepared")
class PreparedSource(sources.Source):
  """config.data_dir written by `python -m alexnet_jax.prepare`."""

  def __init__(self, config):
    if not config.data_dir:
      raise ValueError("config.dataset='prepared' needs config.data_dir: a directory written "
                       "by `python -m alexnet_jax.prepare`.")
    self.root = epath.Path(config.data_dir)
    self.manifest = read_manifest(self.root)
    self.name = f"prepared {self.root} (from {self.manifest['source']['dataset']})"
    self.class_names = list(self.manifest["class_names"])
    self.stored_size = int(self.manifest["image_size"])
    for key, stored in (("resize_size", self.stored_size),
                        ("eval_resize", self.manifest["eval_resize"])):
      if config[key] != stored:
        raise ValueError(
            f"{self.root} was prepared with {key}={stored!r}, but config.{key}="
            f"{config[key]!r}: pass --config.{key}={stored!r}, or prepare again with this config.")
    self._readers = {}

  def split_names(self):
    return sorted(self.manifest["splits"])

  def _reader(self, split):
    if split not in self.manifest["splits"]:
      raise ValueError(f"{self.root} has splits {self.split_names()}, not {split!r} (prepared "
                       "data holds exactly the splits it was prepared with).")
    if split not in self._readers:
      self._readers[split] = _Reader(self.root, self.manifest, split)
    return self._readers[split]

  def split_size(self, split):
    return self._reader(split).num_examples

  def fingerprint(self, train_split, eval_split):
    """SHA-256 of dataset.json: the record layout, shard sizes and the source's file lists."""
    del train_split, eval_split  # The manifest covers every split.
    return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()

  def train_iterator(self, config, *, start_step, process_index, process_count):
    reader = self._reader(sources.resolve_splits(config, self)[0])
    n, global_batch = reader.num_examples, int(config.batch_size)
    local = global_batch // process_count
    seed = int(config.seed)
    if n < global_batch:
      raise ValueError(f"{self.name} has {n} training examples, fewer than one global batch "
                       f"(config.batch_size={global_batch}).")
    orders = {}

    def epoch_order(epoch):
      if epoch not in orders:
        if len(orders) > 1:
          orders.pop(min(orders))  # Keep the current epoch and the next.
        orders[epoch] = np.random.default_rng(
            [seed, sources.SHUFFLE_TAG, epoch]).permutation(n)
      return orders[epoch]

    def indices(t):
      positions = t * global_batch + process_index * local + np.arange(local)
      epochs, offsets = np.divmod(positions, n)
      out = np.empty(local, np.int64)
      for epoch in np.unique(epochs):  # A batch spans at most two epochs.
        where = epochs == epoch
        out[where] = epoch_order(int(epoch))[offsets[where]]
      return out, {}

    return _Batches(reader, indices, local, start_step)

  def eval_iterator(self, config, *, process_index, process_count):
    reader = self._reader(sources.resolve_splits(config, self)[1])
    n, global_batch = reader.num_examples, int(config.eval_batch_size)
    local = global_batch // process_count
    num_batches = math.ceil(n / global_batch)
    mine = np.array_split(np.arange(n), process_count)[process_index]
    padded = np.full(num_batches * local, -1)
    padded[:len(mine)] = mine

    def indices(t):
      chunk = padded[t * local:(t + 1) * local]
      return chunk, {"mask": chunk >= 0}

    return _Batches(reader, indices, local, 0, stop=num_batches)
