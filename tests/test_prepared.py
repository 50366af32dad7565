"""Prepared datasets: what is stored, resumable and atomic preparation, exact reading."""

import collections
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax import config_lib
from alexnet_jax import data
from alexnet_jax import prepare as prepare_lib
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.data import augment
from alexnet_jax.data import prepared
from alexnet_jax.data import sklearn_digits
from tests.conftest import REPO_ROOT
from tests.helpers import child_env


def _digits_config(tfds_data_dir, **overrides):
  c = config_lib.load("quickstart")
  c.tfds_data_dir = tfds_data_dir
  c.image_size, c.resize_size = 24, 32
  c.batch_size, c.eval_batch_size = 64, 100
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory, tfds_data_dir):
  out = tmp_path_factory.mktemp("prepared_digits")
  prepare_lib.prepare(_digits_config(tfds_data_dir), out, shard_size=500)
  return out


def _train_config(tfds_data_dir, root, **overrides):
  return _digits_config(tfds_data_dir, dataset="prepared", data_dir=str(root), **overrides)


def test_the_stored_images_are_the_resized_source(digits_dir, tfds_data_dir):
  manifest = prepared.read_manifest(digits_dir)
  assert manifest["image_size"] == 32 and manifest["class_names"] == [str(d) for d in range(10)]
  assert {k: v["num_examples"] for k, v in manifest["splits"].items()} == {
      "train": 1437, "validation": 360}
  assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [500, 500, 437]
  assert manifest["bytes_per_example"] == 32 * 32 * 3 + 4
  c = _train_config(tfds_data_dir, digits_dir)
  info = data.dataset_info(c)
  assert (info.num_train_examples, info.num_eval_examples, info.stored_size) == (1437, 360, 32)
  # Every eval example, read back, is the source image resized as eval resizes it.
  images, labels, _ = sklearn_digits.load_split_arrays()["test"]
  expected = collections.Counter(
      (augment.eval_crops(tf.constant(img), image_size=32, resize_size=32).numpy().tobytes(),
       int(lab)) for img, lab in zip(images, labels))
  got = collections.Counter()
  for batch in data.create_eval_iterator(c, process_index=0, process_count=1):
    for img, lab in zip(batch["image"][batch["mask"]], batch["label"][batch["mask"]]):
      got[(img.tobytes(), int(lab))] += 1
  assert got == expected


def test_global_batches_are_the_same_on_any_number_of_processes(digits_dir, tfds_data_dir):
  c = _train_config(tfds_data_dir, digits_dir, batch_size=480)
  one = data.create_train_iterator(c, start_step=1, process_index=0, process_count=1)
  two = [data.create_train_iterator(c, start_step=1, process_index=p, process_count=2)
         for p in range(2)]
  for _ in range(4):  # 1437 / 480: crosses an epoch boundary
    whole = next(one)
    halves = [next(it) for it in two]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_epochs_visit_every_example_once_and_resume_exactly(digits_dir, tfds_data_dir):
  c = _train_config(tfds_data_dir, digits_dir, batch_size=479)  # 3 steps = one epoch
  it = data.create_train_iterator(c, process_index=0, process_count=1)
  batches = [next(it) for _ in range(6)]
  counts = collections.Counter()
  for b in batches[:3]:
    counts.update(img.tobytes() + bytes([lab]) for img, lab in zip(b["image"], b["label"]))
  assert sum(counts.values()) == 1437
  manifest = prepared.read_manifest(digits_dir)
  assert len(counts) == len({img.tobytes() + bytes([lab]) for b in batches[3:] for img, lab in
                             zip(b["image"], b["label"])})
  assert not np.array_equal(batches[0]["label"], batches[3]["label"])  # another order
  resumed = data.create_train_iterator(c, start_step=4, process_index=0, process_count=1)
  for want in batches[4:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])
  assert manifest["splits"]["train"]["skipped"] == []


@pytest.mark.parametrize("process_count,eval_batch_size", [(1, 100), (2, 100), (2, 14)])
def test_eval_covers_the_split_exactly_once(digits_dir, tfds_data_dir, process_count,
                                            eval_batch_size):
  c = _train_config(tfds_data_dir, digits_dir, eval_batch_size=eval_batch_size)
  labels, counts = [], []
  for p in range(process_count):
    batches = list(data.create_eval_iterator(c, process_index=p, process_count=process_count))
    counts.append(len(batches))
    for b in batches:
      assert b["image"].shape == (eval_batch_size // process_count, 32, 32, 3)
      assert not b["image"][~b["mask"]].any()
      labels += b["label"][b["mask"]].tolist()
  assert counts == [math.ceil(360 / eval_batch_size)] * process_count
  assert data.num_eval_batches(c, process_count) == counts[0]
  assert collections.Counter(labels) == collections.Counter(
      sklearn_digits.load_split_arrays()["test"][1].tolist())


def _killed_prepare(c, output, monkeypatch, shard_size=4):
  """prepare(c, output) killed at its 5th shard file: in the middle of the training split."""
  real_write, writes = workdir_lib.write_bytes_atomic, []

  def dying_write(target, content):
    if str(target).endswith((".images", ".labels")):  # shard files, not progress JSON
      writes.append(target)
      if len(writes) == 5:
        raise KeyboardInterrupt("killed")
    real_write(target, content)

  monkeypatch.setattr(workdir_lib, "write_bytes_atomic", dying_write)
  with pytest.raises(KeyboardInterrupt):
    prepare_lib.prepare(c, output, shard_size=shard_size)
  monkeypatch.undo()


def test_an_interrupted_preparation_is_refused_then_resumed(flowers, tmp_path, monkeypatch):
  c = config_lib.base_config()
  c.dataset, c.data_dir = "imagefolder", str(flowers)
  c.image_size, c.resize_size = 24, 28
  complete = tmp_path / "complete"
  prepare_lib.prepare(c, complete, shard_size=4)

  partial = tmp_path / "partial"
  _killed_prepare(c, partial, monkeypatch)
  training = c.copy_and_resolve_references()
  training.dataset, training.data_dir = "prepared", str(partial)
  with pytest.raises(FileNotFoundError, match="interrupted; rerun the same"):
    data.dataset_info(training)
  prepare_lib.prepare(c, partial, shard_size=4)  # picks up after the last complete shard
  for name in sorted(p.name for p in complete.iterdir()):
    assert (partial / name).read_bytes() == (complete / name).read_bytes(), name
  info = data.dataset_info(training)
  assert (info.num_train_examples, info.num_eval_examples) == (15, 10)


def test_undecodable_files_are_left_out_and_named(flowers, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  root = tmp_path / "folder"
  shutil.copytree(flowers, root)
  (root / "train" / "roses" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
  c = config_lib.base_config()
  c.dataset, c.data_dir = "imagefolder", str(root)
  c.image_size, c.resize_size = 24, 28
  manifest = prepare_lib.prepare(c, tmp_path / "out")
  assert manifest["splits"]["train"]["num_examples"] == 15
  assert [s.endswith("broken.jpg") for s in manifest["splits"]["train"]["skipped"]] == [True]


def test_a_config_that_does_not_match_the_stored_size_is_refused(digits_dir, tfds_data_dir):
  with pytest.raises(ValueError, match="prepared with resize_size=32.*--config.resize_size=32"):
    data.dataset_info(_train_config(tfds_data_dir, digits_dir, resize_size=36))


def _folder_config(root):
  c = config_lib.base_config()
  c.dataset, c.data_dir = "imagefolder", str(root)
  c.image_size, c.resize_size = 24, 28
  return c


def _snapshot(root):
  return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def _change_roses(root, change):
  """Adds, removes or renames one photo of ROOT/train/roses."""
  roses = root / "train" / "roses"
  first = sorted(roses.iterdir())[0]
  if change == "added":
    shutil.copy(first, roses / "zz_new.jpg")
  elif change == "removed":
    first.unlink()
  else:
    first.rename(roses / "zz_renamed.jpg")


@pytest.mark.parametrize("change", ["added", "removed", "renamed"])
def test_a_resume_after_the_source_folder_changed_is_refused(flowers, tmp_path, monkeypatch,
                                                             change):
  root = tmp_path / "folder"
  shutil.copytree(flowers, root)
  c = _folder_config(root)
  partial = tmp_path / "partial"
  _killed_prepare(c, partial, monkeypatch)
  before = _snapshot(partial)
  _change_roses(root, change)
  with pytest.raises(ValueError, match=r"^[^\n]*source has changed[^\n]*the source's files changed: train[^\n]*"
                                       r"delete .*partial or use a new --output"):
    prepare_lib.prepare(c, partial, shard_size=4)
  assert _snapshot(partial) == before  # Nothing written.


@pytest.mark.slow
def test_the_prepare_command_says_a_changed_source_in_one_line(flowers, tmp_path, monkeypatch):
  root = tmp_path / "folder"
  shutil.copytree(flowers, root)
  partial = tmp_path / "partial"
  _killed_prepare(_folder_config(root), partial, monkeypatch)
  _change_roses(root, "added")
  proc = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.prepare", "--config=default",
       "--config.dataset=imagefolder", f"--config.data_dir={root}", "--config.image_size=24",
       "--config.resize_size=28", f"--output={partial}", "--shard_size=4"],
      cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "source has changed" in last, proc.stderr[-2000:]


def test_a_finished_preparation_of_another_dataset_is_refused(flowers, tmp_path):
  root = tmp_path / "folder"
  shutil.copytree(flowers, root)
  out = tmp_path / "out"
  first = prepare_lib.prepare(_folder_config(root), out, shard_size=4)
  before = _snapshot(out)
  assert prepare_lib.prepare(_folder_config(root), out, shard_size=4) == first  # a no-op
  other = _folder_config(root)
  other.resize_size = 32
  with pytest.raises(ValueError, match=r"holds a different prepared dataset \(.*resize_size.*\);"
                                       r" choose a new --output or delete it"):
    prepare_lib.prepare(other, out, shard_size=4)
  _change_roses(root, "added")
  with pytest.raises(ValueError, match=r"holds a different prepared dataset \(.*the source's files changed: train"):
    prepare_lib.prepare(_folder_config(root), out, shard_size=4)
  assert _snapshot(out) == before


def _copy(digits_dir, tmp_path):
  root = tmp_path / "copy"
  shutil.copytree(digits_dir, root)
  return root


def _edit_manifest(root, edit):
  manifest = json.loads((root / prepared.MANIFEST).read_text())
  edit(manifest)
  (root / prepared.MANIFEST).write_text(json.dumps(manifest))


def test_labels_out_of_range_are_refused_naming_the_shard(digits_dir, tfds_data_dir, tmp_path):
  root = _copy(digits_dir, tmp_path)
  labels = np.fromfile(root / "train-00001.labels", "<i4")
  labels[[3, 7]] = [99, -7]
  labels.astype("<i4").tofile(root / "train-00001.labels")
  with pytest.raises(ValueError, match=r"train-00001\.labels.*-7.*99.*10 classes.*rerun"):
    data.dataset_info(_train_config(tfds_data_dir, root))


def _outside(root, tmp_path, kind):
  outside = tmp_path / "outside"
  outside.mkdir()
  shutil.move(root / "train-00000.images", outside / "stolen.images")
  if kind == "dotdot":
    return "../outside/stolen.images"
  if kind == "absolute":
    return str(outside / "stolen.images")
  os.symlink(outside / "stolen.images", root / "link.images")
  return "link.images"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_shard_paths_outside_the_dataset_directory_are_refused(digits_dir, tfds_data_dir,
                                                               tmp_path, kind):
  root = _copy(digits_dir, tmp_path)
  name = _outside(root, tmp_path, kind)

  def edit(manifest):
    manifest["splits"]["train"]["shards"][0]["images"] = name

  _edit_manifest(root, edit)
  with pytest.raises(ValueError, match=r"outside .*copy"):
    data.dataset_info(_train_config(tfds_data_dir, root))


def test_an_edited_image_size_is_refused_naming_the_shard(digits_dir, tfds_data_dir, tmp_path):
  root = _copy(digits_dir, tmp_path)
  _edit_manifest(root, lambda m: m.update(image_size=16))
  with pytest.raises(FileNotFoundError,
                     match=r"train-00000\.images holds 1536000 bytes.*500 records of 768.*rerun"):
    data.dataset_info(_train_config(tfds_data_dir, root, image_size=12, resize_size=16))


@pytest.mark.parametrize("damage", ["truncated", "images deleted", "labels deleted"])
def test_a_damaged_shard_is_named_when_the_dataset_opens(digits_dir, tfds_data_dir, tmp_path,
                                                         damage):
  root = _copy(digits_dir, tmp_path)
  if damage == "truncated":
    with open(root / "validation-00000.images", "r+b") as f:
      f.truncate(1000)
    name = "validation-00000.images"
  else:
    name = "validation-00000." + damage.split()[0]
    (root / name).unlink()
  with pytest.raises(FileNotFoundError, match=rf"^[^\n]*{name}[^\n]*rerun[^\n]*prepare"):
    data.dataset_info(_train_config(tfds_data_dir, root))


@pytest.mark.slow
def test_training_names_a_damaged_shard_in_one_line(digits_dir, tmp_path):
  root = _copy(digits_dir, tmp_path)
  with open(root / "train-00002.images", "r+b") as f:
    f.truncate(5000)
  proc = subprocess.run(
      [sys.executable, "main.py", "--config=quickstart", f"--workdir={tmp_path / 'run'}",
       "--config.dataset=prepared", f"--config.data_dir={root}", "--config.image_size=24",
       "--config.num_train_steps=2"],
      cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "train-00002.images" in last and "rerun" in last, last


# ---- The reader: threads, reused buffers, ranged reads ----


def _stored(root, split="train"):
  """Every stored image of a split, read straight from its shard files."""
  shards = prepared.read_manifest(root)["splits"][split]["shards"]
  return np.concatenate([np.fromfile(root / s["images"], np.uint8) for s in shards]).reshape(
      -1, 32, 32, 3)


def _expected_train_batch(images, seed, t, batch):
  """Batch t as the reader has always served it: epoch e in the order that
  rng([seed, SHUFFLE_TAG, e]).permutation(n) gives."""
  n = len(images)
  epochs, offsets = np.divmod(t * batch + np.arange(batch), n)
  order = [np.random.default_rng([seed, 1, int(e)]).permutation(n)[o]
           for e, o in zip(epochs, offsets)]
  return images[order]


def test_threads_read_the_same_batches_across_epochs_and_resumes(digits_dir, tfds_data_dir):
  """1 and 3 threads give the same bytes in the same order for 2+ epochs (a batch that
  spans two epochs and runs that cross shards included), from step 0 and from step 5.
  Every batch is kept, so a buffer reused while held would show."""
  c = _train_config(tfds_data_dir, digits_dir, batch_size=200)  # 1437 examples: 7.2 steps
  images = _stored(digits_dir)
  runs = {}
  for workers, start in ((1, 0), (3, 0), (3, 5)):
    c.input_workers = workers
    it = data.create_train_iterator(c, start_step=start, process_index=0, process_count=1)
    assert it.workers == workers
    runs[workers, start] = [next(it) for _ in range(16 - start)]
  for t in range(16):
    want = _expected_train_batch(images, c.seed, t, 200)
    for (workers, start), batches in runs.items():
      if t >= start:
        np.testing.assert_array_equal(batches[t - start]["image"], want, err_msg=(workers, t))
        np.testing.assert_array_equal(batches[t - start]["label"], runs[1, 0][t]["label"])


def test_buffers_are_reused_only_once_released(digits_dir, tfds_data_dir):
  """A buffer is written again only when nothing refers to it: batches the loop drops are
  reused; batches on 8 CPU devices (which alias host memory) stay intact while held."""
  from alexnet_jax import parallel  # pylint: disable=g-import-not-at-top
  c = _train_config(tfds_data_dir, digits_dir, batch_size=64, input_workers=2)
  images = _stored(digits_dir)
  seen = []

  def recorded(it):
    for batch in it:
      seen.append(id(batch["image"]))
      yield batch

  mesh = parallel.create_mesh()
  assert mesh.devices.size == 8
  held = []
  feed = recorded(data.create_train_iterator(c, process_index=0, process_count=1))
  for t, batch in enumerate(parallel.prefetch_to_mesh(feed, mesh, size=2)):
    held.append((t, batch))
    if len(held) > 3:  # Checked only after three more batches have been read.
      s, old = held.pop(0)
      np.testing.assert_array_equal(np.asarray(old["image"]),
                                    _expected_train_batch(images, c.seed, s, 64))
    if t == 40:  # Two epochs.
      break
  assert len(set(seen)) < len(seen) / 2, "buffers were not reused"
  # Eval: the padding of the last batch is zero in a reused buffer.
  c.eval_batch_size = 14  # 360 examples: 26 batches, the last holds 10.
  ids, last = set(), None
  for last in data.create_eval_iterator(c, process_index=0, process_count=1):
    ids.add(id(last["image"]))
  assert len(ids) < 26 and last["mask"].sum() == 10
  assert not last["image"][~last["mask"]].any()
  np.testing.assert_array_equal(last["image"][:10], _stored(digits_dir, "validation")[350:])


def test_runs_group_neighbouring_records_of_one_shard():
  indices = np.array([0, 1, 2, 5, 5, 6, 600])
  shards = np.array([0, 0, 0, 0, 0, 0, 1])
  assert prepared._runs(indices, shards, 1) == [(0, 3), (3, 4), (4, 6), (6, 7)]
  assert prepared._runs(indices, shards, 3) == [(0, 4), (4, 6), (6, 7)]
  assert prepared._runs(indices[:1], shards[:1], 1) == [(0, 1)]


def test_remote_shards_are_read_in_one_ranged_read_per_run(digits_dir):
  """The gs:// path (file objects that seek) on local files: a random batch of 200 from
  3 shards of 3 KiB records costs one read per shard, and the same bytes as pread."""
  manifest = prepared.read_manifest(digits_dir)
  local = prepared._Reader(digits_dir, manifest, "train")
  remote = prepared._Reader(digits_dir, manifest, "train")
  remote.remote, reads = True, []

  class Counted:
    def __init__(self, path):
      self.f = open(path, "rb")  # pylint: disable=consider-using-with

    def seek(self, offset):
      self.f.seek(offset)

    def read(self, size):
      reads.append(size)
      return self.f.read(size)

  files = {}
  remote._file = lambda s: files.setdefault(s, Counted(remote.shards[s].images))
  indices = np.random.default_rng(0).permutation(1437)[:200]
  want, got = (np.zeros((200, 32, 32, 3), np.uint8) for _ in range(2))
  local.read(indices, want)
  remote.read(indices, got)
  np.testing.assert_array_equal(got, want)
  assert len(reads) == 3
