"""Image folders as users bring them: any format, any file name, nested folders, split names.

The reference for every decoded image is PIL's `Image.open(path).convert("RGB")`,
what torchvision's ImageFolder loader does.
"""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import config_lib
from alexnet_jax import data

SIZE = 12


def _pattern(seed, mode="RGB"):
  rng = np.random.default_rng(seed)
  image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
  return image.convert(mode)


def _encode(image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _animated_gif(seed):
  frames = [_pattern(seed).convert("P"), _pattern(seed + 100).convert("P")]
  buffer = io.BytesIO()
  frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
  return buffer.getvalue()


# name (bytes, relative to the class folder) -> file contents. Every one must load.
def _odd_files():
  return {
      b"gif named.jpg": _animated_gif(1),  # a GIF whatever the extension says
      b"cmyk.jpg": _encode(_pattern(2, "CMYK"), "JPEG", quality=95),
      b"with spaces in name.jpeg": _encode(_pattern(3), "JPEG", quality=95),
      "fleur \u00e9t\u00e9 \U0001f338.png".encode(): _encode(_pattern(4), "PNG"),
      b"latin1 \xe9t\xe9 \xff.png": _encode(_pattern(5), "PNG"),  # not valid UTF-8
      b"grey.png": _encode(_pattern(6, "L"), "PNG"),
      b"alpha.png": _encode(_pattern(7, "RGBA"), "PNG"),
      b"photo.webp": _encode(_pattern(8), "WEBP", lossless=True),
      b"scan.tiff": _encode(_pattern(9), "TIFF"),
      b"old.bmp": _encode(_pattern(10), "BMP"),
      b"portable.ppm": _encode(_pattern(11), "PPM"),
      b"nested/deeper/inside.png": _encode(_pattern(12), "PNG"),
  }


@pytest.fixture
def odd_folder(tmp_path):
  root = os.fsencode(tmp_path)
  paths = []
  for split in (b"train", b"val"):
    for cls, files in ((b"odd", _odd_files()), (b"plain", {b"p.png": _encode(_pattern(13), "PNG")})):
      for name, content in files.items():
        path = os.path.join(root, split, cls, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(content)
        paths.append(path)
  return tmp_path, paths


def _config(root, **overrides):
  c = config_lib.base_config()
  c.dataset = "imagefolder"
  c.data_dir = str(root)
  c.image_size = c.resize_size = SIZE  # The eval resize is then the identity.
  c.eval_crops = 1
  c.batch_size = c.eval_batch_size = 2
  c.update(overrides)
  return c


def test_every_format_and_file_name_decodes_like_pil(odd_folder):
  root, paths = odd_folder
  c = _config(root, eval_batch_size=26)
  info = data.dataset_info(c)
  assert (info.num_train_examples, info.num_eval_examples) == (13, 13)
  batch = next(data.create_eval_iterator(c, process_index=0, process_count=1))
  got = {bytes(img.tobytes()) for img in batch["image"][batch["mask"]]}
  val = [p for p in paths if os.sep.encode() + b"val" + os.sep.encode() in p]
  expected = set()
  for path in val:
    with Image.open(path) as image:
      expected.add(np.asarray(image.convert("RGB")).tobytes())
  assert len(expected) == 13 and got == expected


def test_a_folder_of_odd_files_trains_without_flags(odd_folder, tmp_path_factory):
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  root, _ = odd_folder
  c = config_lib.load("default:tiny")
  c.dataset, c.data_dir, c.num_classes = "imagefolder", str(root), None
  c.augmentation = "inception"
  c.batch_size = c.eval_batch_size = 8
  final = train.train_and_evaluate(c, str(tmp_path_factory.mktemp("run")))
  assert final["step"] == 4 and final["eval_examples"] == 13
  assert np.isfinite(final["train_loss"])


def test_broken_symlinks_and_other_files_are_named_not_dropped_silently(tmp_path, caplog):
  for split in ("train", "val"):
    for cls in ("a", "b"):
      os.makedirs(tmp_path / split / cls)
      (tmp_path / split / cls / "x.png").write_bytes(_encode(_pattern(0), "PNG"))
  os.symlink(tmp_path / "nowhere.jpg", tmp_path / "train" / "a" / "dangling.jpg")
  (tmp_path / "train" / "b" / "labels.csv").write_text("x,y")
  (tmp_path / "train" / "b" / "Thumbs.db").write_bytes(b"")
  with caplog.at_level(logging.WARNING):
    info = data.dataset_info(_config(tmp_path))
  assert info.num_train_examples == 2
  assert "Ignoring 1 broken symlink(s)" in caplog.text and "dangling.jpg" in caplog.text
  assert "Ignoring 1 file(s) without an image extension" in caplog.text
  assert "labels.csv" in caplog.text and "Thumbs.db" not in caplog.text


def test_an_undecodable_file_with_a_non_utf8_name_is_named(tmp_path):
  for split in ("train", "val"):
    os.makedirs(tmp_path / split / "a")
    (tmp_path / split / "a" / "ok.png").write_bytes(_encode(_pattern(0), "PNG"))
  bad = os.path.join(os.fsencode(tmp_path), b"val", b"a", b"caf\xe9.jpg")
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff this is no JPEG")
  c = _config(tmp_path)
  with pytest.raises(ValueError, match=r"caf\\xe9\.jpg"):
    list(data.create_eval_iterator(c, process_index=0, process_count=1))


def _split_folder(root, names):
  for name in names:
    for cls in ("a", "b"):
      for i in range(5):
        os.makedirs(root / name / cls, exist_ok=True)
        (root / name / cls / f"{i}.png").write_bytes(_encode(_pattern(i), "PNG"))


@pytest.mark.parametrize("folders,expected", [
    (("train", "val"), "validation"),
    (("train", "validation"), "validation"),
    (("train", "test"), "test"),
    (("train", "val", "test"), "validation"),
])
def test_the_eval_split_is_the_datas_own(tmp_path, folders, expected):
  _split_folder(tmp_path, folders)
  info = data.dataset_info(_config(tmp_path))
  assert (info.train_split, info.eval_split, info.eval_carved_from_train) == (
      "train", expected, False)
  assert (info.num_train_examples, info.num_eval_examples) == (10, 10)


def test_only_a_training_folder_holds_out_a_stratified_slice(tmp_path, caplog):
  _split_folder(tmp_path, ["train"])
  c = _config(tmp_path, eval_holdout=0.2)
  with caplog.at_level(logging.WARNING):
    info = data.dataset_info(c)
  assert (info.train_split, info.eval_split, info.eval_carved_from_train) == (
      "train[:80%]", "train[80%:]", True)
  assert (info.num_train_examples, info.num_eval_examples) == (8, 2)
  assert "holding out the last 20% of 'train'" in caplog.text
  assert "carved from the training data" in info.describe()
  labels = next(data.create_eval_iterator(data.with_resolved_splits(c, info), process_index=0,
                                          process_count=1))["label"]
  assert sorted(labels.tolist()) == [0, 1]  # one of each class
  c.eval_split = "train[:10%]"  # Named splits win.
  assert data.dataset_info(c).eval_split == "train[:10%]"
