"""`alexnet_jax/eval_preprocess.py` (numpy + PIL only) against the eval pipeline's TF ops.

The module is what `export` ships next to an artifact; it must give the crops
eval and predict give, on real photos, for every resize mode and crop count.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax import eval_preprocess
from alexnet_jax.data import augment
from tests.conftest import FLOWERS

PHOTOS = sorted(FLOWERS.glob("*/*/*.jpg"))


def _pipeline(data, size, resize_size, mode, crops):
  return augment.eval_crops(tf.constant(data), crops=crops, image_size=size,
                            resize_size=resize_size, eval_resize=mode).numpy()


@pytest.mark.parametrize("size,resize_size,mode,crops", [
    (224, 256, "shorter_side", 1), (224, 224, "stretch", 1), (32, 36, "shorter_side", 10)])
def test_equals_the_eval_pipeline_on_real_photos(size, resize_size, mode, crops):
  info = dict(image_size=size, resize_size=resize_size, eval_resize=mode, crops=crops)
  differing = total = 0
  for path in PHOTOS:
    data = path.read_bytes()
    ours = eval_preprocess.eval_crops(data, info)
    theirs = _pipeline(data, size, resize_size, mode, crops)
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1, path  # float rounding at .5 only
    differing += int((diff > 0).sum())
    total += diff.size
  assert differing / total < 1e-3, (differing, total)


def test_other_formats_and_modes_decode_like_the_pipeline():
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (57, 83, 4), dtype=np.uint8)
  info = dict(image_size=32, resize_size=40, eval_resize="shorter_side", crops=1)
  for mode, array in [("RGBA", pixels), ("L", pixels[..., 0]), ("RGB", pixels[..., :3])]:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    data = buffer.getvalue()
    ours = eval_preprocess.eval_crops(data, info)
    theirs = _pipeline(data, 32, 40, "shorter_side", 1)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1, mode
    # Paths, PIL images and arrays give the same crops as the bytes.
    np.testing.assert_array_equal(eval_preprocess.eval_crops(Image.open(io.BytesIO(data)), info),
                                  ours)


def test_imports_only_numpy_and_pil():
  source = (FLOWERS.parents[2] / "alexnet_jax" / "eval_preprocess.py").read_text()
  imports = {line.split()[1].split(".")[0] for line in source.splitlines()
             if line.startswith(("import ", "from "))}
  assert imports <= {"__future__", "io", "math", "numpy", "PIL"}, imports


def _crops_by_hand(image, size):
  """The centre (offsets rounded half to even, as torchvision) and the paper's ten crops."""
  h, w = image.shape[:2]
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  center = image[top:top + size, left:left + size]
  five = [image[:size, :size], image[:size, w - size:], image[h - size:, :size],
          image[h - size:, w - size:], center]
  return center, np.stack(five + [c[:, ::-1] for c in five])


def _backend_crops(backend, image, size):
  """(center_crop, ten_crops) of one image by the TF (host), numpy (export) or JAX (device)
  implementation, each called as its pipeline calls it."""
  if backend == "tf":
    return (augment.center_crop(tf.constant(image), size).numpy(),
            augment.ten_crops(tf.constant(image), size).numpy())
  if backend == "numpy":
    return eval_preprocess.center_crop(image, size), eval_preprocess.ten_crops(image, size)
  from alexnet_jax import config_lib
  from alexnet_jax.data import device_augment
  config = config_lib.base_config()
  config.image_size = size
  out = []
  for crops in (1, 10):
    config.eval_crops = crops
    out.append(np.asarray(device_augment.eval_fn(config)(image[None]))[0])
  return tuple(out)


@pytest.mark.parametrize("backend", ["tf", "numpy", "jax"])
@pytest.mark.parametrize("height,width", [(27, 30), (29, 31), (31, 25), (24, 24)])
def test_center_crop_and_ten_crops_agree_across_backends(backend, height, width):
  """Margins of 1.5 and 2.5 pixels round to 2 (half to even) in all three."""
  size = 24
  image = (np.arange(height * width * 3) % 251).astype(np.uint8).reshape(height, width, 3)
  center, ten = _backend_crops(backend, image, size)
  want_center, want_ten = _crops_by_hand(image, size)
  np.testing.assert_array_equal(center, want_center)
  np.testing.assert_array_equal(ten, want_ten)
