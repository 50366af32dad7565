"""The eval pipeline's preprocessing with numpy and PIL only, for exported models.

`python -m alexnet_jax.export` copies this file next to the artifact (as
`alexnet_preprocess.py`), so a serving process with neither TensorFlow nor
this package prepares inputs exactly as eval and `predict` do:

    from alexnet_preprocess import eval_crops
    crops = eval_crops("photo.jpg", json.load(open("model.jax.json")))

The steps are those of `alexnet_jax.data.augment`: decode to RGB (PIL's JPEG
decode equals TF's accurate IDCT bit for bit), resize with TF's antialiased
bilinear filter (`tf.image.resize(..., antialias=True)`, reimplemented below:
PIL's filter differs from it by ~0.2 levels on average), round to uint8, then
the centre crop (offsets rounded half to even, as torchvision) or the ten
crops. Float rounding may move a pixel by one level on rare images.

Imports nothing but numpy and PIL: keep it that way.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def load_rgb(image) -> np.ndarray:
  """A path, bytes, PIL image or uint8 array -> uint8 RGB [H, W, 3] (first frame)."""
  if isinstance(image, np.ndarray):
    array = np.asarray(image, np.uint8)
    if array.ndim == 2:
      array = array[..., None]
    return np.repeat(array[..., :1], 3, -1) if array.shape[-1] < 3 else array[..., :3]
  if isinstance(image, (bytes, bytearray)):
    image = Image.open(io.BytesIO(image))
  elif not isinstance(image, Image.Image):
    image = Image.open(image)
  image.seek(0)
  return np.asarray(image.convert("RGB"), np.uint8)


def _filter_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of TF's scale_and_translate with the triangle kernel, antialiased."""
  scale = out_size / in_size
  inv_scale = np.float32(1.0 / scale)
  kernel_scale = max(1.0 / scale, 1.0)
  radius = np.float32(kernel_scale)
  matrix = np.zeros((out_size, in_size), np.float32)
  for x in range(out_size):
    sample = np.float32((x + 0.5) * inv_scale)
    if sample < 0 or sample > in_size:
      continue
    start = min(max(math.ceil(sample - radius - np.float32(0.5)), 0), in_size - 1)
    end = min(max(math.floor(sample + radius - np.float32(0.5)), 0), in_size - 1) + 1
    source = np.arange(start, end, dtype=np.float32)
    weights = np.maximum(0.0, 1.0 - np.abs((source + np.float32(0.5) - sample)
                                           / np.float32(kernel_scale))).astype(np.float32)
    total = weights.sum(dtype=np.float32)
    if abs(total) >= 1000.0 * np.finfo(np.float32).tiny:
      weights = weights * np.float32(1.0 / total)
    matrix[x, start:end] = weights
  return matrix


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [height, width, 3] on 0..255, antialiased bilinear."""
  rows = _filter_matrix(image.shape[0], height)
  cols = _filter_matrix(image.shape[1], width)
  x = image.astype(np.float32)
  x = np.einsum("wj,ijc->iwc", cols, x, dtype=np.float32)
  return np.einsum("hi,iwc->hwc", rows, x, dtype=np.float32)


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(height, width) with the shorter side `size`, the longer truncated (torchvision)."""
  short = min(height, width)
  if height <= width:
    return size, int(math.floor(size * width / short))
  return int(math.floor(size * height / short)), size


def resized_for_eval(image, resize_size: int, eval_resize: str = "shorter_side") -> np.ndarray:
  rgb = load_rgb(image)
  if eval_resize == "stretch":
    h, w = resize_size, resize_size
  else:
    h, w = shorter_side_size(rgb.shape[0], rgb.shape[1], resize_size)
  return np.clip(np.floor(resize(rgb, h, w) + 0.5), 0, 255).astype(np.uint8)


def center_crop(images, size: int):
  """[..., H, W, C] -> [..., size, size, C]; odd margins rounded half to even (torchvision).

  numpy or jax.numpy arrays alike (device_augment crops stored images with it).
  """
  top = round((images.shape[-3] - size) / 2)
  left = round((images.shape[-2] - size) / 2)
  return images[..., top:top + size, left:left + size, :]


def ten_crops(images, size: int, xp=np):
  """[..., H, W, C] -> [..., 10, size, size, C]: corners (TL, TR, BL, BR), centre, then
  the same mirrored. `xp`: numpy, or jax.numpy for device arrays."""
  bottom, right = images.shape[-3] - size, images.shape[-2] - size
  crops = xp.stack([images[..., :size, :size, :], images[..., :size, right:, :],
                    images[..., bottom:, :size, :], images[..., bottom:, right:, :],
                    center_crop(images, size)], axis=-4)
  return xp.concatenate([crops, crops[..., ::-1, :]], axis=-4)


def eval_crops(image, info: dict) -> np.ndarray:
  """One image -> the exported model's input for it: uint8 [S, S, 3] or [10, S, S, 3].

  `info` is the artifact's JSON (image_size, resize_size, eval_resize, crops).
  Stack several with np.stack for a batch.
  """
  resized = resized_for_eval(image, int(info["resize_size"]),
                             info.get("eval_resize", "shorter_side"))
  size = int(info["image_size"])
  if int(info.get("crops", 1)) == 10:
    return ten_crops(resized, size)
  return center_crop(resized, size)
