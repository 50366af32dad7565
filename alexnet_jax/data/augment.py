"""Image preprocessing and augmentation as pure TensorFlow ops.

Every function here works on one image, eagerly or inside `tf.data.Dataset.map`,
and takes either the *encoded* file bytes (a scalar tf.string: JPEG, PNG, GIF or
BMP) or an already decoded uint8 image [H, W, C] with C in {1, 3, 4}. Taking the
bytes lets the JPEG paths decode only the pixels they keep (the fused
`decode_and_crop_jpeg`), which is most of the input pipeline's speed.

Outputs are uint8 RGB: the host ships uint8 to the accelerator (4x fewer bytes
than float32) and normalisation happens on the device.

Randomness is stateless: each random function takes `seed`, an int32/int64
tensor of shape [2], and gives the same output for the same seed no matter
which thread runs it or when. The input pipeline derives that seed from
(config.seed, global example index), which makes augmentation deterministic
under parallel map and across resumes.

Resizing: the training paths resize bilinearly without antialiasing, about 4x
cheaper than with it; they lose little because a JPEG window at least twice
the output size is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling, which is
both fast and a proper low-pass), so for JPEGs the final resize shrinks the
window's shorter side by less than 2x. The eval path decodes at full scale and resizes with antialiasing, like
PIL/torchvision, so that weights converted from torchvision see the images
they were trained on.
"""

import functools

import tensorflow as tf

# The paper's PCA colour augmentation ("lighting"): eigen-decomposition of the
# 3x3 covariance of ImageNet RGB pixels on the [0, 1] scale. Columns of
# IMAGENET_PCA_EIGVEC are the eigenvectors; values from fb.resnet.torch's transforms.lua,
# the standard copy used by torchvision recipes and big_vision.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

AUGMENTATIONS = ("paper", "inception", "none")

# The crop sampler's aspect-ratio range (width / height), as in torchvision's
# RandomResizedCrop and the Inception paper.
INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)


# ----------------------------------------------------------------------------
# Decoding and small helpers.
# ----------------------------------------------------------------------------


def _is_encoded(image):
  return image.dtype == tf.string


def to_rgb(image):
  """uint8 [H, W, C] with C in {1, 2, 3, 4} -> uint8 [H, W, 3].

  Greyscale (and greyscale + alpha) is repeated into three channels; an alpha
  channel is dropped.
  """
  image = tf.convert_to_tensor(image)
  channels = image.shape[-1]
  if channels is not None:  # Static: no graph branching needed.
    if channels in (1, 2):
      return tf.tile(image[..., :1], [1, 1, 3])
    if channels in (3, 4):
      return image[..., :3]
    raise ValueError(f"Images must have 1 to 4 channels, got shape {image.shape}.")
  rgb = tf.cond(
      tf.shape(image)[-1] < 3,
      lambda: tf.tile(image[..., :1], [1, 1, 3]),
      lambda: image[..., :3])
  return tf.ensure_shape(rgb, [None, None, 3])


def _decode_other(data):
  """Non-JPEG bytes (PNG, GIF, BMP) -> uint8 RGB [H, W, 3] (first GIF frame)."""
  return tf.ensure_shape(
      tf.io.decode_image(data, channels=3, expand_animations=False), [None, None, 3])


def per_format(image, fn):
  """Applies fn to a JPEG's bytes, or to the decoded pixels of anything else.

  fn must accept both a scalar tf.string holding a JPEG (and then use the JPEG
  ops below, which can decode part of the file) and a uint8 RGB image, and
  return the same shape and dtype for both. The format check happens once per
  image, so other formats are decoded exactly once.
  """
  if not _is_encoded(image):
    return fn(to_rgb(image))
  return tf.cond(tf.io.is_jpeg(image), lambda: fn(image), lambda: fn(_decode_other(image)))


def decode(image):
  """Encoded bytes (any supported format) or a decoded image -> uint8 RGB [H, W, 3].

  JPEGs use the accurate IDCT: this is the eval path.
  """
  if not _is_encoded(image):
    return to_rgb(image)
  return tf.cond(
      tf.io.is_jpeg(image),
      lambda: tf.ensure_shape(tf.io.decode_jpeg(image, channels=3), [None, None, 3]),
      lambda: _decode_other(image))


def _jpeg_or_image_shape(image):
  """[height, width] of JPEG bytes (header only) or of a decoded image."""
  if _is_encoded(image):
    return tf.image.extract_jpeg_shape(image)[:2]
  return tf.shape(image)[:2]


# JPEG decoders can produce the image at 1/2, 1/4 or 1/8 scale directly from
# the DCT coefficients, much faster than decoding it whole and averaging
# properly (so shrinking it further aliases less).
_JPEG_RATIOS = (1, 2, 4, 8)


def _decode_jpeg_window(data, shape, window, ratio):
  """decode_and_crop_jpeg at 1/ratio scale; `window` is in full-scale pixels.

  Training only: the fast integer IDCT is slightly less exact, which random
  augmentation swamps.
  """
  height, width = shape[0], shape[1]
  y, x, h, w = tf.unstack(window)
  if ratio == 1:
    scaled = window
  else:
    # The decoder's scaled image is ceil(size / ratio); cover the window.
    top, left = y // ratio, x // ratio
    bottom = tf.minimum(-(-(y + h) // ratio), -(-height // ratio))
    right = tf.minimum(-(-(x + w) // ratio), -(-width // ratio))
    scaled = tf.stack([top, left, bottom - top, right - left])
  return tf.image.decode_and_crop_jpeg(
      data, scaled, channels=3, ratio=ratio, dct_method="INTEGER_FAST")


def _crop_window(image, shape, window, out_size):
  """The `window` ([y, x, height, width]) of an image, decoding as little as possible.

  For JPEG bytes this is the fused `decode_and_crop_jpeg` (no IDCT outside the
  window, no reading past its last row) and, when the window's shorter side is
  at least 2x, 4x or 8x `out_size`, at that reduced scale: the caller resizes
  to `out_size` anyway. Decoded images are just sliced.
  """
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


def _to_uint8(image):
  """Float image on the 0..255 scale -> uint8, rounding to nearest and clipping."""
  return tf.saturate_cast(image + 0.5, tf.uint8)


def shorter_side_size(height, width, size):
  """Output [height, width] that scales the shorter side to `size`.

  The longer side is truncated like torchvision's `Resize(size)`, so eval
  crops line up with torchvision's for converted weights.
  """
  height = tf.cast(height, tf.float64)
  width = tf.cast(width, tf.float64)
  size = tf.constant(size, tf.float64)
  short = tf.minimum(height, width)
  new_h = tf.where(height <= width, size, tf.floor(size * height / short))
  new_w = tf.where(height <= width, tf.floor(size * width / short), size)
  return tf.cast(tf.stack([new_h, new_w]), tf.int32)


def resize(image, size, *, antialias):
  """Bilinear resize of a uint8 image -> float32 on the 0..255 scale.

  Which input dtype is faster depends on the kernel (measured on one core,
  375x500 -> 256x341): plain bilinear takes 1240 us from uint8 but 723 us
  from float32, so it gets float32; the antialiased kernel is the other way
  round (3115 vs 3820 us), so it gets uint8.
  """
  if not antialias:
    image = tf.cast(image, tf.float32)
  return tf.image.resize(image, size, method="bilinear", antialias=antialias)


def resize_shorter_side(image, size, *, antialias):
  """uint8 [H, W, 3] -> float32 [H', W', 3] (0..255) with min(H', W') == size."""
  shape = tf.shape(image)
  new_size = shorter_side_size(shape[0], shape[1], size)
  return resize(image, new_size, antialias=antialias)


def _check_sizes(image_size, resize_size):
  if image_size > resize_size:
    raise ValueError(
        f"image_size={image_size} is larger than resize_size={resize_size}: the shorter "
        "side is resized to resize_size before an image_size crop, so resize_size must be "
        ">= image_size.")


def flip(image, seed):
  """Mirrors left-right with probability 1/2, decided by `seed`."""
  return tf.image.stateless_random_flip_left_right(image, seed)


def _seeds(seed, n):
  """n independent [2]-seeds from one, so each random op draws its own stream."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


# ----------------------------------------------------------------------------
# PCA lighting noise.
# ----------------------------------------------------------------------------


def lighting_delta(seed, sigma):
  """The paper's per-image RGB offset on the [0, 1] scale: V @ (alpha * lambda).

  alpha ~ N(0, sigma^2) per principal component (three numbers per image), so
  the offset along eigenvector j has standard deviation sigma * lambda_j.
  """
  alpha = tf.random.stateless_normal([3], seed, stddev=sigma)
  eigval = tf.constant(IMAGENET_PCA_EIGVAL, tf.float32)
  eigvec = tf.constant(IMAGENET_PCA_EIGVEC, tf.float32)
  return tf.linalg.matvec(eigvec, alpha * eigval)


def pca_lighting(image, seed, sigma):
  """Adds the paper's PCA colour noise to a uint8 or 0..255 float image.

  Returns uint8 (clipped to 0..255). With sigma == 0 the image is returned
  unchanged (cast to uint8).
  """
  image = tf.cast(image, tf.float32)
  if sigma:
    image = _add_per_channel(image, 255.0 * lighting_delta(seed, sigma))
  return _to_uint8(image)


def _add_per_channel(image, offset):
  """image [H, W, 3] + offset [3].

  Written as [H, W*3] + a tiled [W*3] row: TensorFlow's CPU kernels broadcast
  over a trailing axis of 3 about 5x slower (measured: 375 vs 80 us at 224^2).
  """
  shape = tf.shape(image)
  rows = tf.reshape(image, [shape[0], shape[1] * 3])
  return tf.reshape(rows + tf.tile(offset, [shape[1]])[None, :], shape)


# ----------------------------------------------------------------------------
# Training augmentations.
# ----------------------------------------------------------------------------


def paper_window(shape, seed, *, image_size, resize_size):
  """A random [y, x, side, side] window of the original image for `paper_train`.

  Resizing the shorter side to resize_size and cropping image_size is the
  same as cropping a square of side shorter * image_size / resize_size from
  the original and resizing that to image_size, up to rounding the window to
  whole source pixels. Cropping first lets the decoder skip the rest.
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
  """AlexNet's training augmentation.

  The shorter side resized to `resize_size`, a uniformly random `image_size`
  square crop (done crop-first, see `paper_window`), a random horizontal flip
  and PCA lighting noise with sigma `pca_sigma`.

  Args:
    image: encoded bytes or a uint8 image (see module docstring).
    seed: [2] int tensor.
    image_size, resize_size: crop and resize sizes (pixels).
    pca_sigma: lighting noise scale; 0 disables it.
    random_flip: False keeps orientation (e.g. for digits).

  Returns:
    uint8 [image_size, image_size, 3].
  """
  _check_sizes(image_size, resize_size)
  crop_seed, flip_seed, light_seed = _seeds(seed, 3)

  def crop(image):
    shape = _jpeg_or_image_shape(image)
    window = paper_window(shape, crop_seed, image_size=image_size, resize_size=resize_size)
    image = _crop_window(image, shape, window, image_size)
    return resize(image, [image_size, image_size], antialias=False)

  # Lighting is a per-channel offset, so it commutes with the flip; flipping
  # after the uint8 cast moves 4x fewer bytes.
  image = pca_lighting(per_format(image, crop), light_seed, pca_sigma)
  if random_flip:
    image = flip(image, flip_seed)
  return image


def sample_crop_window(shape, seed, *, area_range=(0.08, 1.0),
                       aspect_range=INCEPTION_ASPECT_RANGE, max_attempts=10):
  """Random [y, x, height, width] covering area_range of the image, as Inception.

  Falls back to the whole image when no window fits in `max_attempts` tries
  (TensorFlow's behaviour; torchvision takes a centre crop instead).
  """
  shape3 = tf.concat([tf.cast(shape, tf.int32), [3]], axis=0)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape3,
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range),
      max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def inception_train(image, seed, *, image_size=224, area_range=(0.08, 1.0),
                    aspect_range=INCEPTION_ASPECT_RANGE, random_flip=True):
  """Random-resized crop + flip (torchvision's and the seed code's training aug).

  Samples a window with area fraction in `area_range` and width/height in
  `aspect_range`, decodes only that window, resizes it to image_size^2 (not
  keeping aspect) and flips it half the time.

  Returns:
    uint8 [image_size, image_size, 3].
  """
  crop_seed, flip_seed = _seeds(seed, 2)

  def crop(image):
    shape = _jpeg_or_image_shape(image)
    window = sample_crop_window(shape, crop_seed, area_range=area_range,
                                aspect_range=aspect_range)
    image = _crop_window(image, shape, window, image_size)
    return resize(image, [image_size, image_size], antialias=False)

  # Bilinear weights are convex, so values stay in 0..255: a plain cast after
  # rounding suffices, and flipping uint8 moves 4x fewer bytes than float.
  image = tf.cast(per_format(image, crop) + 0.5, tf.uint8)
  if random_flip:
    image = flip(image, flip_seed)
  return image


# ----------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------


def _resized_for_eval(image, image_size, resize_size):
  _check_sizes(image_size, resize_size)
  return _to_uint8(resize_shorter_side(decode(image), resize_size, antialias=True))


def central_crop(image, size):
  """The size x size centre of an image (top-left rounding of odd margins)."""
  shape = tf.shape(image)
  top = (shape[0] - size) // 2
  left = (shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def eval_center(image, *, image_size=224, resize_size=256):
  """Shorter side to resize_size, then the centre image_size crop -> uint8 [S, S, 3]."""
  image = _resized_for_eval(image, image_size, resize_size)
  return tf.ensure_shape(central_crop(image, image_size), [image_size, image_size, 3])


def ten_crop(image, *, image_size=224, resize_size=256):
  """The paper's test-time crops -> uint8 [10, S, S, 3].

  After resizing the shorter side to resize_size: crops 0-4 are the top-left,
  top-right, bottom-left, bottom-right and centre image_size squares, crops 5-9
  are the same five mirrored left-right. The eval step averages over them.
  """
  image = _resized_for_eval(image, image_size, resize_size)
  s = image_size
  shape = tf.shape(image)
  bottom, right = shape[0] - s, shape[1] - s
  crops = tf.stack([
      image[:s, :s],
      image[:s, right:],
      image[bottom:, :s],
      image[bottom:, right:],
      central_crop(image, s),
  ])
  crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
  return tf.ensure_shape(crops, [10, s, s, 3])


# ----------------------------------------------------------------------------
# Config-driven entry points (what the input pipeline maps).
# ----------------------------------------------------------------------------


def train_preprocess_fn(config):
  """Returns fn(image, seed) -> uint8 [S, S, 3] for config.augmentation.

  Config keys: augmentation, image_size, resize_size, random_flip,
  pca_lighting, inception_area_range.
  """
  kind = config.augmentation
  size, resize = config.image_size, config.resize_size
  if kind == "paper":
    _check_sizes(size, resize)
    return lambda image, seed: paper_train(
        image, seed, image_size=size, resize_size=resize,
        pca_sigma=config.pca_lighting, random_flip=config.random_flip)
  if kind == "inception":
    area = tuple(config.inception_area_range)
    if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0:
      raise ValueError(
          f"config.inception_area_range={area} must be (min, max) with 0 < min <= max <= 1.")
    return lambda image, seed: inception_train(
        image, seed, image_size=size, area_range=area, random_flip=config.random_flip)
  if kind == "none":
    _check_sizes(size, resize)
    return lambda image, seed: eval_center(image, image_size=size, resize_size=resize)
  raise ValueError(f"Unknown config.augmentation={kind!r}; allowed: {', '.join(AUGMENTATIONS)}.")


def eval_preprocess_fn(config):
  """Returns fn(image) -> uint8 [S, S, 3] (eval_crops=1) or [10, S, S, 3] (10)."""
  size, resize = config.image_size, config.resize_size
  _check_sizes(size, resize)
  if config.eval_crops == 1:
    return lambda image: eval_center(image, image_size=size, resize_size=resize)
  if config.eval_crops == 10:
    return lambda image: ten_crop(image, image_size=size, resize_size=resize)
  raise ValueError(f"config.eval_crops={config.eval_crops!r}; allowed: 1 (centre) or 10 "
                   "(paper: 4 corners + centre, and their mirror images).")
