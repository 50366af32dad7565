"""The input pipeline's promises: exact eval, determinism, exact resume, every source.

Exactness is checked with examples that carry their identity: PNGs whose pixel
values encode an id (image folders), and the digits dataset compared, image by
image, with scikit-learn's own arrays.
"""

import collections
import logging
import math
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import data
from alexnet_jax.data import sklearn_digits
from alexnet_jax.data import tfds_source
from alexnet_jax import config_lib


def tiny_config(**overrides):
  c = config_lib.base_config()
  c.image_size = c.resize_size = 8
  c.augmentation = "none"
  c.eval_crops = 1
  c.batch_size = c.eval_batch_size = 4
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


def digits_config(tfds_data_dir, **overrides):
  """The offline digits dataset (built once per session in tfds_data_dir)."""
  return tiny_config(**{"dataset": "sklearn_digits", "tfds_data_dir": tfds_data_dir,
                        "train_split": "train", "eval_split": "test", **overrides})


# ---------------------------------------------------------------- id-coded folders


def write_id_folder(root, splits):
  """root/<split>/<class>/<id>.png, each an 8x8 PNG whose pixels spell its id.

  splits: {folder: {class: count}}. Ids run over all files of a folder.
  Returns {folder: {id: class index}}.
  """
  truth = {}
  for folder, classes in splits.items():
    truth[folder] = {}
    next_id = 0
    for label, (name, count) in enumerate(sorted(classes.items())):
      os.makedirs(root / folder / name)
      for _ in range(count):
        pixels = np.zeros((8, 8, 3), np.uint8)
        pixels[..., 0], pixels[..., 1] = next_id % 256, next_id // 256
        (root / folder / name / f"{next_id:05d}.png").write_bytes(
            tf.io.encode_png(pixels).numpy())
        truth[folder][next_id] = label
        next_id += 1
  return truth


def ids_of(images):
  """Ids spelled by id-coded images (after an identity resize)."""
  return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


@pytest.fixture(scope="module")
def id_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("ids")
  truth = write_id_folder(root, {"train": {"cat": 9, "dog": 8},
                                 "val": {"cat": 10, "dog": 13}})
  return root, truth


def collect_eval(config, process_count):
  """Runs every process's eval iterator; returns (per-process batch counts, real examples)."""
  counts, examples = [], []
  for p in range(process_count):
    batches = list(data.create_eval_iterator(config, process_index=p,
                                                       process_count=process_count))
    counts.append(len(batches))
    for b in batches:
      assert b["image"].dtype == np.uint8 and b["label"].dtype == np.int32
      assert b["mask"].dtype == bool
      assert b["image"].shape[0] == config.eval_batch_size // process_count
      assert not b["image"][~b["mask"]].any() and not b["label"][~b["mask"]].any()
      examples += [(img, int(lab)) for img, lab in zip(b["image"][b["mask"]],
                                                       b["label"][b["mask"]])]
  return counts, examples


@pytest.mark.parametrize("process_count,eval_batch_size", [(1, 4), (2, 4), (2, 6), (2, 50)])
def test_folder_eval_covers_the_split_exactly_once(id_folder, process_count, eval_batch_size):
  root, truth = id_folder
  c = tiny_config(dataset="imagefolder", data_dir=str(root), eval_batch_size=eval_batch_size)
  n = len(truth["val"])  # 23: no batch size here divides it.
  assert n % eval_batch_size
  expected_batches = math.ceil(n / eval_batch_size)
  assert data.num_eval_batches(c, process_count) == expected_batches
  counts, examples = collect_eval(c, process_count)
  assert counts == [expected_batches] * process_count
  ids = [int(i) for i in ids_of(np.stack([img for img, _ in examples]))]
  assert sorted(ids) == list(range(n))  # Each once.
  assert {i: lab for i, (_, lab) in zip(ids, examples)} == truth["val"]


@pytest.mark.parametrize("process_count", [1, 2])
def test_tfds_eval_covers_the_split_exactly_once(tfds_data_dir, process_count):
  c = digits_config(tfds_data_dir, eval_batch_size=14)
  counts, examples = collect_eval(c, process_count)
  assert counts == [math.ceil(360 / 14)] * process_count
  images, labels, _ = sklearn_digits.load_split_arrays()["test"]
  expected = collections.Counter((img.tobytes(), int(lab)) for img, lab in zip(images, labels))
  for img, _ in examples:  # Greyscale repeated into RGB.
    assert (img == img[..., :1]).all()
  got = collections.Counter((img[..., :1].tobytes(), lab) for img, lab in examples)
  assert got == expected


def test_training_epochs_cover_each_process_share_once(id_folder):
  root, truth = id_folder
  c = tiny_config(dataset="imagefolder", data_dir=str(root), batch_size=2)
  seen = []
  for p in range(2):
    it = data.create_train_iterator(c, process_index=p, process_count=2)
    share = len(range(p, 17, 2))  # 17 train images, strided over 2 processes.
    epoch = np.concatenate([ids_of(next(it)["image"]) for _ in range(share)])[:share]
    assert len(set(epoch)) == share
    seen += epoch.tolist()
  assert sorted(seen) == list(range(17))


def first_batches(config, count=2, **kwargs):
  it = data.create_train_iterator(config, process_index=0, process_count=1, **kwargs)
  return [next(it) for _ in range(count)]


def assert_same_batches(a, b):
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys() == {"image", "label"}
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.slow
def test_same_seed_same_batches_other_seed_other_batches(tfds_data_dir, flowers):
  digits = digits_config(tfds_data_dir, augmentation="paper", batch_size=16)
  folder = tiny_config(dataset="imagefolder", data_dir=str(flowers),
                       augmentation="inception", image_size=32, resize_size=36, batch_size=8)
  for c in (digits, folder):
    a = first_batches(c)
    assert_same_batches(a, first_batches(c))
    c.seed = 1
    b = first_batches(c)
    assert not np.array_equal(a[0]["label"], b[0]["label"])
    assert not np.array_equal(a[0]["image"], b[0]["image"])


def test_resume_gives_the_uninterrupted_batches_across_epochs(tfds_data_dir, flowers):
  # digits: 1437 examples / 64 per step, so step 22 straddles epochs 0 and 1.
  digits = digits_config(tfds_data_dir, augmentation="paper", batch_size=64)
  # flowers: 15 train images, 4 per step: step 3 straddles epochs 0 and 1.
  folder = tiny_config(dataset="imagefolder", data_dir=str(flowers),
                       augmentation="inception", image_size=24, resize_size=28, batch_size=4)
  for c, process_index, process_count, start in [(digits, 0, 1, 21), (folder, 1, 2, 2)]:
    it = data.create_train_iterator(c, process_index=process_index,
                                              process_count=process_count)
    uninterrupted = [next(it) for _ in range(start + 3)][start:]
    resumed = data.create_train_iterator(
        c, start_step=start, process_index=process_index, process_count=process_count)
    assert_same_batches(uninterrupted, [next(resumed) for _ in range(3)])


def test_tfds_training_with_shards_covers_each_epoch_and_resumes(tfds_data_dir, monkeypatch):
  # Large splits are read as several shards merged in a per-epoch random
  # order; make the 1437 digits take that path (16 shards of ~90).
  monkeypatch.setattr(tfds_source, "MIN_SHARD_EXAMPLES", 64)
  c = digits_config(tfds_data_dir, batch_size=479, shuffle_buffer_size=100)
  it = data.create_train_iterator(c, process_index=0, process_count=1)
  batches = [next(it) for _ in range(7)]
  images, labels, _ = sklearn_digits.load_split_arrays()["train"]
  expected = collections.Counter((img.tobytes(), int(lab)) for img, lab in zip(images, labels))
  epochs = []
  for e in range(2):  # 3 steps of 479 = one epoch of 1437.
    epoch = [(img[..., :1].tobytes(), int(lab)) for b in batches[3 * e:3 * e + 3]
             for img, lab in zip(b["image"], b["label"])]
    assert collections.Counter(epoch) == expected
    epochs.append(epoch)
  assert epochs[0] != epochs[1]  # Each epoch has its own order.
  resumed = data.create_train_iterator(c, start_step=4, process_index=0,
                                                 process_count=1)
  assert_same_batches(batches[4:], [next(resumed) for _ in range(3)])


def test_every_example_of_a_global_batch_gets_its_own_augmentation(tmp_path):
  # One image copied 16 times: any two outputs that match shared a seed.
  jpeg = tf.io.encode_jpeg(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
  for i in range(16):
    os.makedirs(tmp_path / "train" / f"c{i % 2}", exist_ok=True)
    (tmp_path / "train" / f"c{i % 2}" / f"{i}.jpg").write_bytes(jpeg.numpy())
  c = tiny_config(dataset="imagefolder", data_dir=str(tmp_path), augmentation="inception",
                  image_size=24, resize_size=28, batch_size=16, eval_split="train")
  images = []
  for p in range(2):
    it = data.create_train_iterator(c, process_index=p, process_count=2)
    images += [img.tobytes() for step in range(2) for img in next(it)["image"]]
  assert len(set(images)) == 32  # 2 steps x 16 examples, all different.


# ---------------------------------------------------------------- sources


def test_imagenet2012_end_to_end_with_mock_data():
  c = tiny_config(image_size=32, resize_size=36, augmentation="paper", eval_crops=10,
                  batch_size=8, eval_batch_size=6)
  assert c.dataset == "imagenet2012"
  with tfds.testing.mock_data(num_examples=10):
    info = data.dataset_info(c)
    assert info.num_classes == 1000 and len(info.class_names) == 1000
    assert info.class_names[0] == "n01440764"
    batch = next(data.create_train_iterator(c, process_index=0, process_count=1))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    assert ((batch["label"] >= 0) & (batch["label"] < 1000)).all()
    c.augmentation = "inception"
    batch = next(data.create_train_iterator(c, process_index=1, process_count=2))
    assert batch["image"].shape == (4, 32, 32, 3)
    batches = list(data.create_eval_iterator(c, process_index=0, process_count=1))
    assert len(batches) == data.num_eval_batches(c, 1) == 2
    assert batches[0]["image"].shape == (6, 10, 32, 32, 3)
    assert sum(b["mask"].sum() for b in batches) == 10
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert ((labels >= 0) & (labels < 1000)).all()


def test_sklearn_digits_builds_offline_with_all_1797_images(tfds_data_dir):
  c = digits_config(tfds_data_dir)
  info = data.dataset_info(c)
  assert info.class_names == [str(d) for d in range(10)]
  assert (info.num_train_examples, info.num_eval_examples) == (1437, 360)
  builder = tfds.builder("sklearn_digits", data_dir=tfds_data_dir)
  arrays = sklearn_digits.load_split_arrays()
  all_ids = []
  for split in ("train", "test"):
    ds = tfds.as_numpy(builder.as_dataset(split=split))
    by_id = {int(ex["id"]): ex for ex in ds}
    images, labels, ids = arrays[split]
    assert sorted(by_id) == sorted(ids.tolist())
    for image, label, idx in zip(images, labels, ids):
      np.testing.assert_array_equal(by_id[idx]["image"], image)
      assert by_id[idx]["label"] == label
    all_ids += list(by_id)
  assert sorted(all_ids) == list(range(1797))
  # Stratified: each digit's share of the test split is its share of the data.
  test_counts = np.bincount(arrays["test"][1])
  all_counts = test_counts + np.bincount(arrays["train"][1])
  assert np.abs(test_counts - all_counts * 360 / 1797).max() < 1
  from sklearn import datasets as sk_datasets  # The independent reference.
  digits = sk_datasets.load_digits()
  idx = arrays["train"][2][5]
  np.testing.assert_array_equal(arrays["train"][0][5][..., 0],
                                (digits.images[idx] * 255 // 16).astype(np.uint8))


def test_a_first_build_says_so_in_one_line_without_tfds_noise(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    data.dataset_info(digits_config(str(tmp_path)))
  assert "Building TFDS dataset sklearn_digits" in caplog.text
  assert "Variant folder" not in caplog.text  # TFDS's warning about the folder it builds
  assert "Downloading and preparing" not in caplog.text


def test_tfds_slicing_carves_a_validation_split(tfds_data_dir):
  c = digits_config(tfds_data_dir, train_split="train[:90%]", eval_split="train[90%:]",
                    eval_batch_size=10)
  info = data.dataset_info(c)
  assert (info.num_train_examples, info.num_eval_examples) == (1293, 144)
  counts, examples = collect_eval(c, 2)
  assert counts == [15, 15] and len(examples) == 144
  batch = next(data.create_train_iterator(c, process_index=0, process_count=2))
  assert batch["image"].shape == (2, 8, 8, 3)


def test_imagefolder_reads_train_and_val_folders(flowers):
  c = tiny_config(dataset="imagefolder", data_dir=str(flowers), image_size=32,
                  resize_size=36, eval_crops=10, batch_size=8, eval_batch_size=4,
                  augmentation="paper")
  info = data.dataset_info(c)
  assert info.class_names == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (5, 15, 10)
  assert (info.train_split, info.eval_split, info.eval_carved_from_train) == (
      "train", "validation", False)
  batch = next(data.create_train_iterator(c, process_index=0, process_count=1))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert ((batch["label"] >= 0) & (batch["label"] < 5)).all()
  batches = list(data.create_eval_iterator(c, process_index=0, process_count=1))
  assert len(batches) == 3 and batches[0]["image"].shape == (4, 10, 32, 32, 3)
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert np.bincount(labels).tolist() == [2] * 5  # val/ holds 2 per class.
  # A slice of a folder split takes every class in proportion.
  c.train_split, c.eval_split = "train[:67%]", "train[67%:]"
  info = data.dataset_info(c)
  assert (info.num_train_examples, info.num_eval_examples) == (10, 5)
  labels = np.concatenate([b["label"][b["mask"]] for b in
                           data.create_eval_iterator(c, process_index=0, process_count=1)])
  assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]


def test_fake_data_is_made_once_and_stays_on_the_devices(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import parallel  # pylint: disable=g-import-not-at-top
  c = tiny_config(dataset="fake", num_classes=7, fake_num_examples=21, image_size=16,
                  resize_size=16, eval_crops=10, batch_size=8, eval_batch_size=8)
  info = data.dataset_info(c)
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (7, 21, 21)
  it = data.create_train_iterator(c, process_index=0, process_count=1)
  batches = [next(it) for _ in range(6)]
  assert batches[0]["image"].shape == (8, 16, 16, 3) and batches[0]["image"].dtype == np.uint8
  assert batches[0]["label"].dtype == np.int32 and batches[0]["label"].max() < 7
  resumed = data.create_train_iterator(c, start_step=3, process_index=0, process_count=1)
  assert_same_batches(batches[3:5], [next(resumed) for _ in range(2)])
  halves = [next(data.create_train_iterator(c, process_index=p, process_count=2))
            for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]),
                                batches[0]["image"])
  counts, examples = collect_eval(c, 2)
  assert counts == [3, 3] and len(examples) == 21
  assert examples[0][0].shape == (10, 16, 16, 3)
  # Each pool batch crosses to the devices once, however many steps use it.
  transfers = []
  real_to_global = parallel.to_global
  monkeypatch.setattr(parallel, "to_global",
                      lambda b, m: transfers.append(1) or real_to_global(b, m))
  mesh = parallel.create_mesh(jax.devices()[:1])
  stream = parallel.prefetch_to_mesh(data.create_train_iterator(c, process_index=0,
                                                                process_count=1), mesh)
  for _ in range(20):
    next(stream)
  assert len(transfers) == 4
  c.num_classes = None
  assert data.dataset_info(c).num_classes == 1000


# ---------------------------------------------------------------- bad input


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
  write_id_folder(tmp_path, {"train": {"a": 3, "b": 3}, "val": {"a": 4, "b": 3}})
  bad = tmp_path / "val" / "b" / "broken.jpg"
  bad.write_bytes(b"this is not a JPEG")
  truncated = tmp_path / "train" / "a" / "truncated.jpg"
  truncated.write_bytes(tf.io.encode_jpeg(np.full((64, 64, 3), 90, np.uint8)).numpy()[:200])
  c = tiny_config(dataset="imagefolder", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="broken.jpg"):
    list(data.create_eval_iterator(c, process_index=0, process_count=1))
  with pytest.raises(ValueError, match="truncated.jpg"):
    it = data.create_train_iterator(c, process_index=0, process_count=1)
    for _ in range(3):
      next(it)

  c.skip_corrupt_images = True
  it = data.create_eval_iterator(c, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == 2  # ceil(8 / 4): the padding takes the skipped file's place.
  assert sum(b["mask"].sum() for b in batches) == 7
  assert it.num_skipped == 1 and it.skipped == [str(bad)]
  it = data.create_train_iterator(c, process_index=0, process_count=1)
  ids = np.concatenate([ids_of(next(it)["image"]) for _ in range(3)])  # 2 epochs of 6 real
  assert it.num_skipped >= 1 and it.skipped == [str(truncated)]
  assert sorted(set(ids.tolist())) == list(range(6))


def test_non_image_files_and_bad_layouts(tmp_path, caplog):
  write_id_folder(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 2}})
  (tmp_path / "train" / "a" / "notes.txt").write_text("hello")
  (tmp_path / "train" / "a" / ".DS_Store").write_text("ignored")
  c = tiny_config(dataset="imagefolder", data_dir=str(tmp_path))
  with caplog.at_level(logging.WARNING):
    assert data.dataset_info(c).num_train_examples == 4
  assert "Ignoring 1 file(s) without an image extension" in caplog.text
  assert "notes.txt" in caplog.text and ".DS_Store" not in caplog.text

  os.makedirs(tmp_path / "val" / "empty")
  with pytest.raises(ValueError, match="empty holds no image files"):
    data.create_eval_iterator(c, process_index=0, process_count=1)
  os.rmdir(tmp_path / "val" / "empty")
  c.eval_split = "test"
  with pytest.raises(FileNotFoundError, match="Split 'test' has no folder"):
    data.dataset_info(c)
  c.data_dir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    data.dataset_info(c)
  c.data_dir = None
  with pytest.raises(ValueError, match="needs config.data_dir"):
    data.dataset_info(c)


def test_config_errors(tmp_path, id_folder):
  root, _ = id_folder
  c = tiny_config(dataset="imagefolder", data_dir=str(root), batch_size=6)
  with pytest.raises(ValueError, match="batch_size=6 must be a positive multiple.*4"):
    data.create_train_iterator(c, process_index=0, process_count=4)
  c.eval_batch_size = 3
  with pytest.raises(ValueError, match="eval_batch_size=3"):
    data.num_eval_batches(c, 2)
  c.num_classes = 3
  with pytest.raises(ValueError, match="num_classes=3 but.*2 classes"):
    data.dataset_info(c)
  c = tiny_config(dataset="no_such_dataset")
  with pytest.raises(ValueError, match="not a TFDS dataset"):
    data.dataset_info(c)


def test_unprepared_tfds_datasets_say_what_to_do(tmp_path):
  c = tiny_config(dataset="imagenet2012", tfds_data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError) as e:
    data.dataset_info(c)
  message = str(e.value)
  manual = os.path.join(str(tmp_path), "downloads", "manual")
  for needed in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", manual,
                 f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir={manual}"):
    assert needed in message
  c.dataset = "cifar10"
  with pytest.raises(FileNotFoundError, match="(?s)not prepared.*tfds build cifar10"):
    data.dataset_info(c)


@pytest.mark.slow
def test_global_batches_do_not_depend_on_the_process_count(flowers, tfds_data_dir):
  """Every source: process p's batch is the p-th slice of the one global batch,
  so 1 and 2 processes train on exactly the same examples."""
  for dataset in ("fake", "imagefolder", "sklearn_digits"):
    c = config_lib.load("default:tiny")
    c.dataset = dataset
    c.data_dir = str(flowers)
    c.tfds_data_dir = tfds_data_dir
    c.batch_size = 8 if dataset != "sklearn_digits" else 240
    c.num_classes = 10 if dataset == "fake" else None
    c.augmentation = "paper"
    one = data.create_train_iterator(c, start_step=3, process_index=0, process_count=1)
    two = [data.create_train_iterator(c, start_step=3, process_index=p,
                                                process_count=2) for p in range(2)]
    for _ in range(5):  # past an epoch boundary (15 images / 8; 1437 digits / 240)
      whole = next(one)
      halves = [next(it) for it in two]
      np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]), whole["label"])
      np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), whole["image"])


def test_downloadable_tfds_datasets_prepare_themselves_on_first_use(tmp_path, monkeypatch):
  """A TFDS dataset that downloads its files (here from a local HTTP server) is
  downloaded and built on first use, as `tfds.load` does."""
  import functools  # pylint: disable=g-import-not-at-top
  import http.server  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top

  served = tmp_path / "served"
  served.mkdir()
  rng = np.random.default_rng(0)
  np.savez(served / "shapes.npz", images=rng.integers(0, 256, (12, 8, 8, 3), np.uint8),
           labels=np.arange(12) % 3)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}/shapes.npz"

  class RemoteShapesForTest(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # This test module is not in a package, where TFDS looks.
      return pathlib.Path(__file__)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(8, 8, 3)),
          "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      arrays = np.load(dl_manager.download(url))
      return {"train": self._generate_examples(arrays, range(9)),
              "test": self._generate_examples(arrays, range(9, 12))}

    def _generate_examples(self, arrays, indices):
      for i in indices:
        yield i, {"image": arrays["images"][i], "label": int(arrays["labels"][i])}

  monkeypatch.setattr(tfds_source, "_online", lambda: True)
  try:
    c = tiny_config(dataset="remote_shapes_for_test", tfds_data_dir=str(tmp_path / "tfds"))
    info = data.dataset_info(c)
  finally:
    server.shutdown()
  assert (info.num_train_examples, info.eval_split, info.num_eval_examples) == (9, "test", 3)
  assert tfds.builder("remote_shapes_for_test", data_dir=str(tmp_path / "tfds")).is_prepared()
