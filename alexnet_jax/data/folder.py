"""Image folders: config.data_dir/<split>/<class>/.../<image>, torchvision's ImageFolder layout.

Splits are sub-folders: train, and val or validation (or any name). Classes are
the sorted sub-folder names of the training split's folder, so labels agree
between splits. A class folder may nest further folders; every file in it
whose extension is an image's is an example, and its format is read from its
first bytes (a GIF named .jpg works). Paths are kept as bytes, so names with
spaces, any unicode or bytes that are not UTF-8 all load.

Listing never drops a file silently: files with other extensions and broken
symlinks are counted and named in a warning. Slices (`train[:90%]`) are taken
per class, so a held-out slice has every class in proportion.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os

import numpy as np
import tensorflow as tf
from etils import epath

from alexnet_jax.data import sources
from alexnet_jax.workdir import is_local

# torchvision's IMG_EXTENSIONS plus .gif.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".ppm", ".pgm", ".pbm",
                    ".tif", ".tiff")
# Files operating systems drop into folders; never data, never reported.
_OS_FILES = ("thumbs.db", "desktop.ini")
# Split names and the folder names that hold them.
_FOLDER_NAMES = {"validation": ("val", "validation"), "val": ("val", "validation")}


def display(path: bytes | str) -> str:
  """A path for messages: undecodable bytes shown as \\xNN escapes."""
  if isinstance(path, str):
    path = os.fsencode(path)
  return path.decode("utf-8", "backslashreplace")


def _dir_id(path) -> tuple[int, int]:
  st = os.stat(path)
  return st.st_dev, st.st_ino


def _layout_ids(folder: str) -> set:
  """The data root, its split folders and their class folders: no class folder's walk
  may enter them through a symlink."""
  root = os.path.dirname(os.path.abspath(folder))
  ids = {_dir_id(root)}
  for split in os.scandir(root):
    if split.is_dir():
      ids.add(_dir_id(split.path))
      ids.update(_dir_id(c.path) for c in os.scandir(split.path) if c.is_dir())
  return ids


def _walk(class_dir: str, visited: set):
  """(directory, file names) under a class folder, sorted, as bytes (local) or str (remote).

  Symlinked folders are followed, but each real directory is visited once per
  split (`visited` holds their (device, inode), and starts with the data
  root's layout, `_layout_ids`): a link back up the tree, into another class
  or split, or to a folder already listed is skipped with a warning instead
  of listing its images again under this class.
  """
  if is_local(class_dir):
    top = _dir_id(class_dir)
    for dirpath, dirnames, filenames in os.walk(os.fsencode(class_dir), followlinks=True):
      here = _dir_id(dirpath)
      if here in visited and not (here == top and dirpath == os.fsencode(class_dir)):
        logging.warning("Skipping %s: it leads to a folder already listed (a symlink loop or "
                        "a second link to it).", display(dirpath))
        dirnames[:] = []
        continue
      visited.add(here)
      dirnames[:] = sorted(d for d in dirnames if not d.startswith(b"."))
      yield dirpath, sorted(filenames)
    return
  pending = [epath.Path(class_dir)]  # etils' walk() drops the gs:// prefix: recurse by hand.
  while pending:
    directory = pending.pop(0)
    entries = sorted(directory.iterdir(), key=lambda p: p.name)
    pending[:0] = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    yield (os.fspath(directory).encode(),
           [e.name.encode() for e in entries if not e.is_dir()])


def _subfolders(folder) -> list[str]:
  if not is_local(folder):
    return sorted(p.name for p in epath.Path(folder).iterdir() if p.is_dir())
  return sorted(e.name for e in os.scandir(folder) if e.is_dir())


@functools.lru_cache(maxsize=16)
def _list(folder: str, signature) -> tuple[list[bytes], list[str]]:
  """(paths as bytes, class of each), sorted by class then path.

  `signature` (the modification times of the split and class folders) makes
  the cache forget a folder whose contents changed at the top two levels.
  """
  del signature
  paths, classes, other, broken = [], [], [], []
  visited = _layout_ids(folder) if is_local(folder) else set()
  for class_name in _subfolders(folder):
    class_dir = os.path.join(folder, class_name)
    found = 0
    for dirpath, filenames in _walk(class_dir, visited):
      for name in filenames:
        path = os.path.join(dirpath, name)
        lower = name.lower().decode("utf-8", "replace")
        if name.startswith(b".") or lower in _OS_FILES:
          continue
        if not lower.endswith(IMAGE_EXTENSIONS):
          other.append(path)
        elif is_local(folder) and not os.path.exists(path):
          broken.append(path)
        else:
          paths.append(path)
          classes.append(class_name)
          found += 1
    if not found:
      raise ValueError(f"Class folder {class_dir} holds no image files "
                       f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images.")
  for what, found in (("broken symlink(s)", broken),
                      (f"file(s) without an image extension ({', '.join(IMAGE_EXTENSIONS)})",
                       other)):
    if found:
      logging.warning("Ignoring %d %s in %s: %s%s", len(found), what, folder,
                      ", ".join(display(p) for p in found[:10]),
                      f" and {len(found) - 10} more" if len(found) > 10 else "")
  return paths, classes


def _stratified_order(classes: list[str]) -> np.ndarray:
  """Indices ordering the files so that every slice holds each class in proportion.

  File k of a class with n files sits at (k + 0.5) / n; sorting by that
  interleaves the classes, keeping each class's files in name order.
  """
  classes = np.asarray(classes)
  position = np.zeros(len(classes))
  for name in np.unique(classes):
    where = np.flatnonzero(classes == name)
    position[where] = (np.arange(len(where)) + 0.5) / len(where)
  return np.lexsort((classes, position))


def _bound(text: str, n: int, default: int, split: str) -> int:
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


def _read_bytes(path: bytes) -> bytes:
  return epath.Path(path.decode()).read_bytes()


@sources.register("imagefolder")
class FolderSource(sources.Source):
  """config.data_dir/<split folder>/<class>/<image files>."""

  may_contain_corrupt_files = True

  def __init__(self, config):
    root = config.data_dir
    if not root:
      raise ValueError("config.dataset='imagefolder' needs config.data_dir: a folder holding "
                       "train/<class>/* and val/<class>/* images.")
    if not epath.Path(root).is_dir():
      raise FileNotFoundError(f"config.data_dir={root!r} is not a directory.")
    self.root = root
    self.name = f"imagefolder {root}"
    class_folder = self._folder(sources.parse_split(config.train_split)[0])
    self.class_names = _subfolders(class_folder)
    if not self.class_names:
      raise ValueError(f"{class_folder} has no class sub-folders; expected "
                       f"{class_folder}/<class>/<image files>.")
    self._label_of = {c: i for i, c in enumerate(self.class_names)}

  def split_names(self):
    names = _subfolders(self.root)
    # A "val" or "validation" folder is the "validation" split.
    if any(n in names for n in _FOLDER_NAMES["validation"]):
      names.append("validation")
    return sorted(set(names))

  def _folder(self, name: str) -> str:
    for candidate in _FOLDER_NAMES.get(name, (name,)):
      folder = os.path.join(self.root, candidate)
      if epath.Path(folder).is_dir():
        return folder
    existing = _subfolders(self.root)
    raise FileNotFoundError(
        f"Split {name!r} has no folder in config.data_dir={self.root!r} (it holds: "
        f"{existing}). Expected {self.root}/train/<class>/* and {self.root}/val/<class>/*.")

  def files(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(paths as bytes, labels) of a possibly sliced split."""
    name, start, stop = sources.parse_split(split)
    folder = self._folder(name)
    signature = None if not is_local(folder) else (os.stat(folder).st_mtime_ns,) + tuple(
        (e.name, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_dir())
    paths, classes = _list(folder, signature)
    unknown = sorted(set(classes) - set(self._label_of))
    if unknown:
      raise ValueError(f"{folder} has classes {unknown} that the training split's folder "
                       f"does not; its classes are {self.class_names}.")
    if not paths:
      raise ValueError(f"{folder} holds no images.")
    order = _stratified_order(classes)
    n = len(order)
    lo, hi = _bound(start, n, 0, split), _bound(stop, n, n, split)
    if not 0 <= lo < hi <= n:
      raise ValueError(f"Split {split!r} selects no images of the {n} in {folder}.")
    order = order[lo:hi]
    labels = np.array([self._label_of[classes[i]] for i in order], np.int32)
    return np.array([paths[i] for i in order], dtype=object), labels

  def split_size(self, split):
    return len(self.files(split)[0])

  def fingerprint(self, train_split, eval_split):
    """SHA-256 of every (split, label, path below the split folder) the run reads."""
    digest = hashlib.sha256()
    for split in (train_split, eval_split):
      folder = os.fsencode(self._folder(sources.parse_split(split)[0]))
      paths, labels = self.files(split)
      digest.update(split.encode() + b"\0")
      for p, label in zip(paths, labels):
        p = os.fsencode(p)
        digest.update(b"%d\0%s\0" % (label, p[len(folder):] if p.startswith(folder) else p))
    return digest.hexdigest()

  def _indexed(self, split, process_index=0, process_count=1):
    paths, labels = self.files(split)
    paths, labels = paths[process_index::process_count], labels[process_index::process_count]
    paths_t, labels_t = tf.constant(list(paths), tf.string), tf.constant(labels)
    remote = not is_local(self.root)

    def load(index):
      if remote:  # Through etils.epath: TF's own GCS client reaches only Google.
        data = tf.numpy_function(_read_bytes, [paths_t[index]], tf.string, stateful=False)
        return {"image": tf.ensure_shape(data, []), "label": labels_t[index]}
      return {"image": tf.io.read_file(paths_t[index]), "label": labels_t[index]}

    return len(paths), load, lambda index: display(paths[int(index)])

  def train_records(self, split, *, seed, shuffle_buffer_size):
    del shuffle_buffer_size  # Random access: a full permutation per epoch.
    n, load, describe = self._indexed(split)
    return sources.Records(n, lambda epoch: tf.data.Dataset.from_tensor_slices(
        sources.epoch_order(n, seed, epoch)), load, describe)

  def eval_records(self, split, process_index, process_count):
    # A stride, not a block: each process sees every class.
    n, load, describe = self._indexed(split, process_index, process_count)
    return sources.Records(n, lambda epoch: tf.data.Dataset.range(n), load, describe)
