"""Prepared datasets: decoded uint8 images of one fixed size, read by random access.

`python -m alexnet_jax.prepare` writes them once from any source; training reads
them with `--config.dataset=prepared --config.data_dir=DIR` and the host only
copies bytes: crops, flips and lighting run on the device (`device_augment`).
The eval split follows config.eval_resize. Layout, the checks made when a
dataset opens, and why fixed-size records: docs/design.md, "The prepared format".
"""

from __future__ import annotations

import collections.abc
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import threading

import numpy as np
from etils import epath

from alexnet_jax.data import sources
from alexnet_jax.workdir import is_local

FORMAT = "alexnet_jax.prepared"
VERSION = 1
MANIFEST = "dataset.json"


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
  if not escapes and is_local(root):  # Symlinks too, where they can be resolved.
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


def _runs(indices: np.ndarray, shards: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
  """Splits sorted example indices into runs that one read fetches, as (start, stop)
  positions: the examples of a run share a shard and each lies at most `max_gap` records
  after the one before (a repeat starts a new run). max_gap=1: contiguous records."""
  step = np.diff(indices)
  breaks = np.flatnonzero((np.diff(shards) != 0) | (step == 0) | (step > max_gap)) + 1
  bounds = [0, *breaks.tolist(), len(indices)]
  return list(zip(bounds[:-1], bounds[1:]))


class _Reader:
  """Random access to one split: examples by index, one read per run of neighbouring records.

  Local shards: one `preadv` per run of contiguous records, straight into the batch, on
  one descriptor per shard shared by every thread. Remote shards (gs://...): one ranged
  read per run of records at most REMOTE_GAP bytes apart, so a batch costs a request per
  run, not per image; a file object per thread (they seek).
  """

  REMOTE_GAP = 1 << 20  # Bytes a remote read may fetch and drop to save a request.

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
    self.remote = not is_local(root)
    self._fds, self._files = {}, threading.local()

  def _file(self, s):
    if not self.remote:  # pread needs no position: one descriptor serves every thread.
      if s not in self._fds:
        fd = os.open(self.shards[s].images, os.O_RDONLY)
        if self._fds.setdefault(s, fd) != fd:  # Another thread was first.
          os.close(fd)
      return self._fds[s]
    files = self._files.__dict__.setdefault("open", {})
    if s not in files:
      files[s] = self.shards[s].images.open("rb")
    return files[s]

  def read(self, indices: np.ndarray, out: np.ndarray, rows=None) -> None:
    """Copies examples indices[rows] into out[rows] (uint8 [len(indices), R, R, 3]).

    rows: positions in `indices` ordered by index (default: all of them); threads may
    fill disjoint rows of one `out` at once.
    """
    flat = out.reshape(len(out), self.record)
    rows = np.argsort(indices, kind="stable") if rows is None else np.asarray(rows)
    wanted = indices[rows]
    shard_of = np.searchsorted(self._starts, wanted, side="right") - 1
    runs = _runs(wanted, shard_of, max(1, self.REMOTE_GAP // self.record) if self.remote else 1)
    offsets = ((wanted - self._starts[shard_of]) * self.record).tolist()
    rows, wanted, shard_of = rows.tolist(), wanted.tolist(), shard_of.tolist()
    for a, b in runs:  # Plain ints from here: the loop holds the GIL.
      f = self._file(shard_of[a])
      if self.remote:
        count = wanted[b - 1] - wanted[a] + 1
        f.seek(offsets[a])
        data = f.read(count * self.record)
        got, want = len(data), count * self.record
        if got == want:
          span = np.frombuffer(data, np.uint8).reshape(count, self.record)
          flat[rows[a:b]] = span[np.subtract(wanted[a:b], wanted[a])]
      else:
        got = want = 0
        for k in range(a, b, 1024):  # At most IOV_MAX buffers per call.
          part = rows[k:min(b, k + 1024)]
          got += os.preadv(f, [flat[i] for i in part], offsets[k])
          want += len(part) * self.record
      if got != want:
        raise OSError(f"{self.shards[shard_of[a]].images} is truncated; rerun prepare.")


class _Batches(collections.abc.Iterator):
  """Batches read by `workers` threads (0: one per core, at most 8), `depth` batches ahead.

  `indices(t)` gives batch t's example indices and any extra arrays (the eval mask); it
  runs on the caller's thread, in order. Each batch is split in file order among the
  threads. An image buffer is reused only when nothing but the ring refers to it
  (`sys.getrefcount`), so a batch still held is never overwritten: by the caller, or by
  `device_put`, which references the array until its copy is done, and for the device
  array's lifetime where the CPU aliases it (`parallel.prefetch_to_mesh`).
  """

  def __init__(self, reader, indices_fn, batch_size, start, stop=None, depth=4, workers=0):
    self._reader, self._indices, self._size = reader, indices_fn, batch_size
    self._next, self._stop = start, stop
    self.workers = int(workers) or min(8, sources.available_cores())
    self._pool = concurrent.futures.ThreadPoolExecutor(self.workers,
                                                       thread_name_prefix="prepared-read")
    self._pending = collections.deque()
    self._ring, self._ring_size = [], 2 * depth + 2
    for _ in range(depth):
      self._submit()

  def _buffer(self):
    for image in self._ring:
      if sys.getrefcount(image) == 3:  # The ring, `image` and getrefcount's argument.
        return image
    r = self._reader.size
    image = np.empty((self._size, r, r, 3), np.uint8)
    if len(self._ring) < self._ring_size:
      self._ring.append(image)
    return image

  def _submit(self):
    if self._stop is not None and self._next >= self._stop:
      return
    indices, extra = self._indices(self._next)
    self._next += 1
    image = self._buffer()
    real = indices >= 0
    count = int(real.sum())  # Padding (index -1) only ever ends a batch.
    image[count:] = 0
    rows = np.argsort(indices[:count], kind="stable")
    reads = [self._pool.submit(self._reader.read, indices[:count], image, part)
             for part in np.array_split(rows, self.workers) if len(part)]
    batch = {"image": image, "label": np.where(real, self._reader.labels[np.maximum(indices, 0)],
                                               0).astype(np.int32)}
    batch.update(extra)
    self._pending.append((batch, reads))

  def __next__(self) -> dict:
    if not self._pending:
      raise StopIteration
    batch, reads = self._pending.popleft()
    for read in reads:
      read.result()
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
    @functools.lru_cache(maxsize=2)  # The current epoch and the next.
    def epoch_order(epoch):
      return np.random.default_rng([seed, sources.SHUFFLE_TAG, epoch]).permutation(n)

    def indices(t):
      positions = t * global_batch + process_index * local + np.arange(local)
      epochs, offsets = np.divmod(positions, n)
      out = np.empty(local, np.int64)
      for epoch in np.unique(epochs):  # A batch spans at most two epochs.
        where = epochs == epoch
        out[where] = epoch_order(int(epoch))[offsets[where]]
      return out, {}

    return _Batches(reader, indices, local, start_step, workers=config.input_workers)

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

    return _Batches(reader, indices, local, 0, stop=num_batches,
                    workers=config.input_workers)
