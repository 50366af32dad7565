"""Decoding, augmentation and eval crops on the host, as pure TensorFlow ops.

Every function works on one image, eagerly or inside `tf.data.Dataset.map`, and
takes the encoded file bytes (a scalar tf.string) or a decoded uint8 image
[H, W, C]; outputs are uint8 RGB (normalisation happens on the device). Taking
the bytes lets the JPEG paths decode only the pixels they keep, which is most of
the input pipeline's speed. Random functions take a stateless [2] `seed`.

Eval preprocessing is torchvision's (docs/design.md, "Eval preprocessing").
Training decodes with the fast IDCT and, for JPEG windows at least twice the
output size, at 1/2, 1/4 or 1/8 scale (DCT scaling, a proper low-pass); then a
bilinear resize without antialiasing shrinks the window by less than 2x.
"""

import functools

import numpy as np
import tensorflow as tf

from alexnet_jax.data.augmentations import IMAGENET_PCA_EIGVAL
from alexnet_jax.data.augmentations import IMAGENET_PCA_EIGVEC
from alexnet_jax.data.augmentations import INCEPTION_ASPECT_RANGE
from alexnet_jax.data.augmentations import INCEPTION_ATTEMPTS

# ----------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------

_JPEG, _TF_DECODABLE, _OTHER = 0, 1, 2


def _format(data):
  """0 for JPEG, 1 for another format TF decodes (PNG, GIF, BMP, WebP), 2 otherwise."""
  head = tf.strings.substr(data, 0, 12)
  four = tf.strings.substr(head, 0, 4)
  is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff")
  tf_decodable = tf.reduce_any(tf.stack([
      tf.equal(four, b"\x89PNG"),
      tf.equal(four, b"GIF8"),
      tf.equal(tf.strings.substr(head, 0, 2), b"BM"),
      tf.logical_and(tf.equal(four, b"RIFF"), tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")),
  ]))
  return tf.where(is_jpeg, _JPEG, tf.where(tf_decodable, _TF_DECODABLE, _OTHER))


def _pil_decode(data: bytes) -> np.ndarray:
  """Any format PIL opens -> uint8 RGB (first frame), like torchvision's loader."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.seek(0)
      return np.asarray(image.convert("RGB"), np.uint8)
  except Exception as e:  # pylint: disable=broad-except  (PIL raises many kinds)
    raise ValueError(f"not an image in a format TensorFlow or PIL can decode ({e})") from None


def _decode_with_pil(data):
  image = tf.numpy_function(_pil_decode, [data], tf.uint8, stateful=False)
  return tf.ensure_shape(image, [None, None, 3])


def _decode_non_jpeg(data):
  """Non-JPEG bytes -> uint8 RGB [H, W, 3]."""
  return tf.cond(
      tf.equal(_format(data), _TF_DECODABLE),
      lambda: tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False),
                              [None, None, 3]),
      lambda: _decode_with_pil(data))


def _is_encoded(image):
  return image.dtype == tf.string


def to_rgb(image):
  """uint8 [H, W, C], C in {1, 2, 3, 4} -> uint8 [H, W, 3] (grey repeated, alpha dropped)."""
  image = tf.convert_to_tensor(image)
  channels = image.shape[-1]
  if channels is not None:
    if channels in (1, 2):
      return tf.tile(image[..., :1], [1, 1, 3])
    if channels in (3, 4):
      return image[..., :3]
    raise ValueError(f"Images must have 1 to 4 channels, got shape {image.shape}.")
  rgb = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                lambda: image[..., :3])
  return tf.ensure_shape(rgb, [None, None, 3])


def decode(image):
  """Encoded bytes of any supported format, or a decoded image -> uint8 RGB [H, W, 3].

  JPEGs use the accurate IDCT, which equals PIL's decode bit for bit.
  """
  if not _is_encoded(image):
    return to_rgb(image)
  return tf.cond(
      tf.equal(_format(image), _JPEG),
      lambda: tf.ensure_shape(
          tf.io.decode_jpeg(image, channels=3, dct_method="INTEGER_ACCURATE"), [None, None, 3]),
      lambda: _decode_non_jpeg(image))


def per_format(image, fn):
  """fn(JPEG bytes) for JPEGs, fn(decoded uint8 RGB) for everything else.

  fn must accept both and return the same shape and dtype; it can then use
  the partial-decode JPEG ops below. Other formats are decoded exactly once.
  """
  if not _is_encoded(image):
    return fn(to_rgb(image))
  return tf.cond(tf.equal(_format(image), _JPEG), lambda: fn(image),
                 lambda: fn(_decode_non_jpeg(image)))


def _jpeg_or_image_shape(image):
  """[height, width] of JPEG bytes (read from the header) or of a decoded image."""
  if _is_encoded(image):
    return tf.image.extract_jpeg_shape(image)[:2]
  return tf.shape(image)[:2]


_JPEG_RATIOS = (1, 2, 4, 8)


def _decode_jpeg_window(data, shape, window, ratio):
  """decode_and_crop_jpeg at 1/ratio scale; `window` in full-scale pixels (training)."""
  height, width = shape[0], shape[1]
  y, x, h, w = tf.unstack(window)
  if ratio == 1:
    scaled = window
  else:  # The decoder's scaled image is ceil(size / ratio); cover the window.
    top, left = y // ratio, x // ratio
    bottom = tf.minimum(-(-(y + h) // ratio), -(-height // ratio))
    right = tf.minimum(-(-(x + w) // ratio), -(-width // ratio))
    scaled = tf.stack([top, left, bottom - top, right - left])
  # The fast IDCT: ~20% cheaper, and random augmentation swamps its error.
  return tf.image.decode_and_crop_jpeg(data, scaled, channels=3, ratio=ratio,
                                       dct_method="INTEGER_FAST")


def _crop_window(image, shape, window, out_size):
  """The [y, x, height, width] window of an image, decoding as little as possible."""
  if not _is_encoded(image):
    y, x, h, w = tf.unstack(window)
    return image[y:y + h, x:x + w]
  short = tf.minimum(window[2], window[3])
  index = tf.reduce_sum(tf.cast(short >= 2 * out_size, tf.int32) +
                        tf.cast(short >= 4 * out_size, tf.int32) +
                        tf.cast(short >= 8 * out_size, tf.int32))
  branches = [functools.partial(_decode_jpeg_window, image, shape, window, r)
              for r in _JPEG_RATIOS]
  return tf.ensure_shape(tf.switch_case(index, branches), [None, None, 3])


# ----------------------------------------------------------------------------
# Resizing, flipping, lighting.
# ----------------------------------------------------------------------------


def _to_uint8(image):
  """Float image on 0..255 -> uint8, rounding to nearest and clipping."""
  return tf.saturate_cast(image + 0.5, tf.uint8)


def shorter_side_size(height, width, size):
  """[height, width] with the shorter side `size`, the longer truncated (torchvision's Resize)."""
  height = tf.cast(height, tf.float64)
  width = tf.cast(width, tf.float64)
  size = tf.constant(size, tf.float64)
  short = tf.minimum(height, width)
  new_h = tf.where(height <= width, size, tf.floor(size * height / short))
  new_w = tf.where(height <= width, tf.floor(size * width / short), size)
  return tf.cast(tf.stack([new_h, new_w]), tf.int32)


def resize(image, size, *, antialias):
  """Bilinear resize of uint8 -> float32 on 0..255.

  The plain kernel is faster from float32, the antialiased one from uint8.
  """
  if not antialias:
    image = tf.cast(image, tf.float32)
  return tf.image.resize(image, size, method="bilinear", antialias=antialias)


def resize_shorter_side(image, size, *, antialias):
  """uint8 [H, W, 3] -> float32 [H', W', 3] (0..255) with min(H', W') == size."""
  shape = tf.shape(image)
  return resize(image, shorter_side_size(shape[0], shape[1], size), antialias=antialias)


def _seeds(seed, n):
  """n independent [2]-seeds from one, one per random decision."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def lighting_delta(seed, sigma):
  """The paper's per-image RGB offset on [0, 1]: V @ (alpha * lambda), alpha ~ N(0, sigma^2)."""
  alpha = tf.random.stateless_normal([3], seed, stddev=sigma)
  eigval = tf.constant(IMAGENET_PCA_EIGVAL, tf.float32)
  eigvec = tf.constant(IMAGENET_PCA_EIGVEC, tf.float32)
  return tf.linalg.matvec(eigvec, alpha * eigval)


def pca_lighting(image, seed, sigma):
  """Adds the paper's PCA colour noise to a uint8 or 0..255 float image -> uint8 (clipped)."""
  image = tf.cast(image, tf.float32)
  if sigma:
    image = _add_per_channel(image, 255.0 * lighting_delta(seed, sigma))
  return _to_uint8(image)


def _add_per_channel(image, offset):
  """image [H, W, 3] + offset [3], as [H, W*3] + a tiled row (TF's CPU kernels
  broadcast over a trailing axis of 3 several times slower)."""
  shape = tf.shape(image)
  rows = tf.reshape(image, [shape[0], shape[1] * 3])
  return tf.reshape(rows + tf.tile(offset, [shape[1]])[None, :], shape)


# ----------------------------------------------------------------------------
# Training augmentations.
# ----------------------------------------------------------------------------


def paper_window(shape, seed, *, image_size, resize_size):
  """A random [y, x, side, side] window of the original image for `paper_train`.

  Resizing the shorter side to resize_size and cropping image_size equals
  cropping a square of side shorter * image_size / resize_size and resizing
  it, up to rounding to whole source pixels; cropping first lets the decoder
  skip the rest.
  """
  height, width = shape[0], shape[1]
  short = tf.minimum(height, width)
  side = tf.cast(tf.round(tf.cast(short, tf.float64) * image_size / resize_size), tf.int32)
  side = tf.clip_by_value(side, 1, short)
  y_seed, x_seed = _seeds(seed, 2)
  y = tf.random.stateless_uniform([], y_seed, maxval=height - side + 1, dtype=tf.int32)
  x = tf.random.stateless_uniform([], x_seed, maxval=width - side + 1, dtype=tf.int32)
  return tf.stack([y, x, side, side])


def paper_train(image, seed, *, image_size=224, resize_size=256, pca_sigma=0.1,
                random_flip=True):
  """AlexNet's training augmentation -> uint8 [image_size, image_size, 3].

  Shorter side to `resize_size`, a uniformly random `image_size` square crop,
  a random horizontal flip, PCA lighting noise of scale `pca_sigma` (0: none).
  """
  crop_seed, flip_seed, light_seed = _seeds(seed, 3)

  def crop(image):
    shape = _jpeg_or_image_shape(image)
    window = paper_window(shape, crop_seed, image_size=image_size, resize_size=resize_size)
    image = _crop_window(image, shape, window, image_size)
    return resize(image, [image_size, image_size], antialias=False)

  # Lighting is a per-channel offset, so it commutes with the flip; flipping
  # after the uint8 cast moves 4x fewer bytes.
  image = pca_lighting(per_format(image, crop), light_seed, pca_sigma)
  return tf.image.stateless_random_flip_left_right(image, flip_seed) if random_flip else image


def sample_crop_window(shape, seed, *, area_range=(0.08, 1.0)):
  """Random [y, x, height, width] covering area_range of the image, as Inception.

  Falls back to the whole image when no window fits in INCEPTION_ATTEMPTS tries
  (TensorFlow's behaviour; torchvision takes a centre crop instead).
  """
  shape3 = tf.concat([tf.cast(shape, tf.int32), [3]], axis=0)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape3, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=INCEPTION_ASPECT_RANGE,
      area_range=tuple(area_range), max_attempts=INCEPTION_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def inception_train(image, seed, *, image_size=224, area_range=(0.08, 1.0), random_flip=True):
  """Random-resized crop + flip (torchvision's RandomResizedCrop) -> uint8 [S, S, 3]."""
  crop_seed, flip_seed = _seeds(seed, 2)

  def crop(image):
    shape = _jpeg_or_image_shape(image)
    window = sample_crop_window(shape, crop_seed, area_range=area_range)
    image = _crop_window(image, shape, window, image_size)
    return resize(image, [image_size, image_size], antialias=False)

  # Bilinear weights are convex: values stay in 0..255, so rounding and a
  # plain cast suffice.
  image = tf.cast(per_format(image, crop) + 0.5, tf.uint8)
  return tf.image.stateless_random_flip_left_right(image, flip_seed) if random_flip else image


# ----------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------


def resized_for_eval(image, resize_size, eval_resize="shorter_side"):
  """Decoded and resized with antialiasing -> uint8.

  shorter_side: the shorter side to resize_size (torchvision's Resize(r));
  stretch: the whole image to resize_size x resize_size, aspect not kept
  (torchvision's Resize((r, r))).
  """
  image = decode(image)
  if eval_resize == "stretch":
    return _to_uint8(resize(image, [resize_size, resize_size], antialias=True))
  return _to_uint8(resize_shorter_side(image, resize_size, antialias=True))


def center_crop(image, size):
  """The size x size centre; odd margins rounded half to even, as torchvision's CenterCrop."""
  shape = tf.shape(image)
  top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2.0), tf.int32)
  left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2.0), tf.int32)
  return image[top:top + size, left:left + size]


def ten_crops(image, size):
  """Corners (TL, TR, BL, BR) and centre of a resized image, then the same mirrored."""
  shape = tf.shape(image)
  bottom, right = shape[0] - size, shape[1] - size
  crops = tf.stack([image[:size, :size], image[:size, right:], image[bottom:, :size],
                    image[bottom:, right:], center_crop(image, size)])
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def eval_crops(image, *, crops=1, image_size=224, resize_size=256, eval_resize="shorter_side"):
  """Resize (see `resized_for_eval`), then the centre crop -> uint8 [S, S, 3], or with
  crops=10 the paper's test-time crops -> [10, S, S, 3] (the eval step averages them)."""
  image = resized_for_eval(image, resize_size, eval_resize)
  if crops == 10:
    return tf.ensure_shape(ten_crops(image, image_size), [10, image_size, image_size, 3])
  return tf.ensure_shape(center_crop(image, image_size), [image_size, image_size, 3])


# ----------------------------------------------------------------------------
# Config-driven entry points (what the input pipeline maps). The config is
# validated by `alexnet_jax.config_lib` before these are called.
# ----------------------------------------------------------------------------


def train_preprocess_fn(config):
  """fn(image, seed) -> uint8 [S, S, 3] for config.augmentation."""
  size, resize_size = config.image_size, config.resize_size
  if config.augmentation == "paper":
    return lambda image, seed: paper_train(
        image, seed, image_size=size, resize_size=resize_size,
        pca_sigma=config.pca_lighting, random_flip=config.random_flip)
  if config.augmentation == "inception":
    area = tuple(config.inception_area_range)
    return lambda image, seed: inception_train(
        image, seed, image_size=size, area_range=area, random_flip=config.random_flip)
  return lambda image, seed: eval_crops(image, image_size=size, resize_size=resize_size,
                                        eval_resize=config.eval_resize)


def eval_preprocess_fn(config, crops=None):
  """fn(image) -> uint8 [S, S, 3] (1 crop) or [10, S, S, 3]; crops default config.eval_crops."""
  return functools.partial(eval_crops, crops=config.eval_crops if crops is None else crops,
                           image_size=config.image_size, resize_size=config.resize_size,
                           eval_resize=config.eval_resize)
