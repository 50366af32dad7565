"""Invariants of the pure-TF image ops, checked eagerly and inside tf.data.

References are independent: numpy slicing for crops and flips, PIL for the
eval resize, the PCA formula solved backwards for the lighting noise.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_jax.data import augment
from alexnet_jax.data import augmentations
from alexnet_jax import config_lib

SEED = tf.constant([3, 7], tf.int64)


def smooth_image(height, width):
  """A smooth, asymmetric RGB image (gradients), so resampling errors stay small.

  Smooth at every scale (no detail finer than the image), so resizing it with
  or without antialiasing, or decoding it at reduced scale, agree.
  """
  y, x = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
  return np.stack([255 * x, 255 * y, 127 + 100 * np.sin(3 * x + 2 * y)],
                  -1).round().astype(np.uint8)


def noisy_image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run(fn, image, mode):
  """fn(image) eagerly, or as the map function of a one-element tf.data pipeline."""
  image = tf.convert_to_tensor(image)
  if mode == "eager":
    return fn(image).numpy()
  ds = tf.data.Dataset.from_tensors(image).map(fn)
  return next(iter(ds)).numpy()


MODES = ("eager", "dataset")
TRAIN_FNS = {
    "paper": lambda x: augment.paper_train(x, SEED, image_size=24, resize_size=28, pca_sigma=0.0),
    "inception": lambda x: augment.inception_train(x, SEED, image_size=24),
    "eval": lambda x: augment.eval_crops(x, image_size=24, resize_size=28),
}


def inputs():
  rgb = smooth_image(40, 52)
  gray = rgb[..., :1]
  return {
      "jpeg": tf.io.encode_jpeg(rgb, quality=95),
      "png": tf.io.encode_png(rgb),
      "rgb": rgb,
      "gray": gray,
      "gray_png": tf.io.encode_png(gray),
      "gray_jpeg": tf.io.encode_jpeg(gray),
      "rgba": np.concatenate([rgb, np.full_like(gray, 255)], -1),
  }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(TRAIN_FNS))
def test_shapes_dtypes_for_every_input_kind(name, mode):
  for kind, image in inputs().items():
    out = run(TRAIN_FNS[name], image, mode)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8, (kind, out.shape, out.dtype)
    assert out.max() > 0, kind
    if kind.startswith("gray"):  # Greyscale becomes three equal channels.
      np.testing.assert_array_equal(out[..., 0], out[..., 1])
      np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("mode", MODES)
def test_ten_crop_shape(mode):
  out = run(lambda x: augment.eval_crops(x, crops=10, image_size=24, resize_size=28),
            tf.io.encode_jpeg(smooth_image(40, 52)), mode)
  assert out.shape == (10, 24, 24, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["paper", "inception"])
def test_same_seed_same_output_other_seed_other_output(name):
  jpeg = tf.io.encode_jpeg(noisy_image(60, 80))
  fn = {"paper": augment.paper_train, "inception": augment.inception_train}[name]
  a = fn(jpeg, SEED, image_size=24).numpy()
  np.testing.assert_array_equal(a, fn(jpeg, SEED, image_size=24).numpy())
  b = fn(jpeg, tf.constant([3, 8], tf.int64), image_size=24).numpy()
  assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ["paper", "inception"])
def test_flip_is_a_mirror_and_can_be_switched_off(name):
  image = noisy_image(50, 70)
  outcomes = set()
  for i in range(16):
    seed = tf.constant([i, 1], tf.int64)
    if name == "paper":
      kw = dict(image_size=24, resize_size=28, pca_sigma=0.0)
      fn = augment.paper_train
    else:
      kw = dict(image_size=24)
      fn = augment.inception_train
    plain = fn(image, seed, random_flip=False, **kw).numpy()
    maybe = fn(image, seed, random_flip=True, **kw).numpy()
    if np.array_equal(maybe, plain):
      outcomes.add("same")
    else:
      np.testing.assert_array_equal(maybe, plain[:, ::-1])
      outcomes.add("mirrored")
  assert outcomes == {"same", "mirrored"}


def test_ten_crops_are_the_corners_centre_and_their_mirrors():
  # Shorter side already resize_size: the resize is the identity, so the crops
  # can be compared exactly with numpy slices.
  s, r = 24, 28
  image = noisy_image(r, 37)
  for mode in MODES:
    crops = run(lambda x: augment.eval_crops(x, crops=10, image_size=s, resize_size=r), image, mode)
    h, w = image.shape[:2]
    top, left = (h - s) // 2, (w - s) // 2
    expected = [image[:s, :s], image[:s, w - s:], image[h - s:, :s], image[h - s:, w - s:],
                image[top:top + s, left:left + s]]
    expected += [e[:, ::-1] for e in expected]
    np.testing.assert_array_equal(crops, np.stack(expected))
    np.testing.assert_array_equal(
        run(lambda x: augment.eval_crops(x, image_size=s, resize_size=r), image, mode),
        crops[4])


def test_eval_center_matches_pil_resize_and_centre_crop():
  image = smooth_image(150, 200) // 2 + noisy_image(150, 200) // 2  # Detail to resample.
  out = augment.eval_crops(image, image_size=64, resize_size=72).numpy().astype(int)
  resized = np.asarray(Image.fromarray(image).resize((96, 72), Image.BILINEAR))  # w=int(72*200/150)
  ref = resized[4:68, 16:80]
  assert np.abs(out - ref).mean() < 1.5


def test_shorter_side_sizes_match_torchvision_resize():
  for (h, w), expected in [((375, 500), (256, 341)), ((500, 375), (341, 256)),
                           ((256, 256), (256, 256)), ((8, 8), (256, 256))]:
    got = augment.shorter_side_size(h, w, 256).numpy().tolist()
    assert got == list(expected), (h, w, got)


def test_paper_crop_first_equals_resize_then_crop():
  """The crop-first shortcut gives the same pixels as the paper's order of ops."""
  h, w, s, r = 180, 240, 56, 64
  image = smooth_image(h, w)
  for i in range(4):
    seed = tf.constant([i, 5], tf.int64)
    y, x, side, side2 = augment.paper_window([h, w], seed, image_size=s,
                                             resize_size=r).numpy().tolist()
    assert side == side2 == round(h * s / r)
    assert 0 <= y <= h - side and 0 <= x <= w - side
    crop_first = tf.image.resize(image[y:y + side, x:x + side], [s, s]).numpy()
    resized = augment.resize_shorter_side(image, r, antialias=False).numpy()
    oy, ox = round(y * r / h), round(x * r / h)
    ref = resized[oy:oy + s, ox:ox + s]
    # Rounding the window to whole pixels moves it by at most half an output
    # pixel (here ~2 grey levels on the steepest gradient).
    assert np.abs(crop_first - ref).mean() < 1.5, i
    assert np.abs(crop_first - ref).max() < 4, i


def test_paper_window_positions_cover_the_image():
  ys, xs = [], []
  for i in range(200):
    y, x, side, _ = augment.paper_window([100, 130], tf.constant([i, 0], tf.int64),
                                         image_size=28, resize_size=32).numpy()
    ys.append(y)
    xs.append(x)
  assert side == 88
  assert min(ys) == 0 and max(ys) == 12 and min(xs) == 0 and max(xs) == 42


def test_inception_windows_respect_area_and_aspect():
  h, w = 300, 400
  fallback = 0
  for i in range(200):
    y, x, ch, cw = augment.sample_crop_window(
        [h, w], tf.constant([i, 9], tf.int64), area_range=(0.08, 1.0)).numpy()
    assert 0 <= y and y + ch <= h and 0 <= x and x + cw <= w
    if (ch, cw) == (h, w):
      fallback += 1
      continue
    assert 0.08 * 0.95 <= ch * cw / (h * w) <= 1.0
    assert 0.75 * 0.97 <= cw / ch <= 4 / 3 * 1.03
  assert fallback < 40  # The whole-image fallback is rare.


def test_inception_fused_jpeg_crop_equals_cropping_decoded_image():
  # Windows stay under 2x the output size here, so the decoder runs at full
  # scale and must give the pixels of the whole decoded image.
  rgb = noisy_image(120, 160)
  jpeg = tf.io.encode_jpeg(rgb, quality=95)
  decoded = tf.io.decode_jpeg(jpeg, dct_method="INTEGER_FAST")
  for i in range(5):
    seed = tf.constant([i, 2], tf.int64)
    fused = augment.inception_train(jpeg, seed, image_size=64).numpy().astype(int)
    sliced = augment.inception_train(decoded, seed, image_size=64).numpy().astype(int)
    assert np.abs(fused - sliced).mean() < 0.5


def test_large_jpegs_decode_at_reduced_scale_in_the_right_place():
  # 1024x1280: whole-image windows are >= 4x the output, so the decoder runs
  # at 1/4 scale; the result must still show the same part of the image.
  rgb = smooth_image(1024, 1280)
  jpeg = tf.io.encode_jpeg(rgb, quality=95)
  for i in range(4):
    seed = tf.constant([i, 4], tf.int64)
    for fn, kw in [(augment.inception_train, dict(area_range=(0.5, 1.0))),
                   (augment.paper_train, dict(resize_size=40, pca_sigma=0.0))]:
      fast = fn(jpeg, seed, image_size=32, **kw).numpy().astype(int)
      full = fn(rgb, seed, image_size=32, **kw).numpy().astype(int)
      assert np.abs(fast - full).mean() < 3.0, (fn.__name__, i)


@pytest.mark.slow
def test_pca_lighting_noise_has_the_papers_scale():
  n, sigma = 4000, 0.1
  seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(11, tf.int64))], 1)
  deltas = tf.map_fn(lambda s: augment.lighting_delta(s, sigma), seeds,
                     fn_output_signature=tf.float32).numpy()
  eigvec = np.array(augment.IMAGENET_PCA_EIGVEC)
  eigval = np.array(augment.IMAGENET_PCA_EIGVAL)
  alpha = np.linalg.solve(eigvec, deltas.T).T / eigval  # Undo delta = V (alpha * lambda).
  np.testing.assert_allclose(alpha.std(0), sigma, rtol=0.06)
  np.testing.assert_allclose(alpha.mean(0), 0.0, atol=0.01)
  # The offsets themselves: std of the projection on eigenvector j = sigma * lambda_j.
  np.testing.assert_allclose((deltas @ eigvec).std(0), sigma * eigval, rtol=0.06)


@pytest.mark.parametrize("mode", MODES)
def test_pca_lighting_shifts_channels_and_clips(mode):
  gray = np.full((8, 8, 3), 128, np.uint8)
  out = run(lambda x: augment.pca_lighting(x, SEED, 0.1), gray, mode).astype(int)
  delta = 255 * augment.lighting_delta(SEED, 0.1).numpy()
  np.testing.assert_array_equal(out, np.broadcast_to(np.round(128 + delta), out.shape))
  # A big sigma on a white image: values are clipped, not wrapped around.
  white = np.full((4, 4, 3), 255, np.uint8)
  out = run(lambda x: augment.pca_lighting(x, SEED, 10.0), white, mode).astype(int)
  delta = 255 * augment.lighting_delta(SEED, 10.0).numpy()
  np.testing.assert_array_equal(out[0, 0], np.clip(np.round(255 + delta), 0, 255))
  np.testing.assert_array_equal(augment.pca_lighting(white, SEED, 0.0).numpy(), white)


def test_paper_train_adds_lighting_per_image():
  image = np.full((40, 40, 3), 100, np.uint8)
  out = augment.paper_train(image, SEED, image_size=24, resize_size=28).numpy().astype(int)
  light_seed = augment._seeds(SEED, 3)[2]
  expected = np.round(100 + 255 * augment.lighting_delta(light_seed, 0.1).numpy())
  np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_config_entry_points_and_errors():
  c = config_lib.base_config()
  c.image_size, c.resize_size = 24, 28
  jpeg = tf.io.encode_jpeg(smooth_image(40, 52))
  for aug in augmentations.AUGMENTATIONS:
    c.augmentation = aug
    assert augment.train_preprocess_fn(c)(jpeg, SEED).shape == (24, 24, 3)
  c.augmentation = "none"  # = the (centre-crop) eval preprocessing.
  c.eval_crops = 1
  np.testing.assert_array_equal(augment.train_preprocess_fn(c)(jpeg, SEED),
                                augment.eval_preprocess_fn(c)(jpeg))
  c.eval_crops = 10
  assert augment.eval_preprocess_fn(c)(jpeg).shape == (10, 24, 24, 3)


# ---------------------------------------------------------------- against torchvision's recipe


def _torchvision_eval(path, resize=256, crop=224):
  """Resize(256) + CenterCrop(224) as torchvision does it on a PIL image."""
  with Image.open(path) as image:
    image = image.convert("RGB")
  w, h = image.size
  if w <= h:
    size = (resize, int(resize * h / w))
  else:
    size = (int(resize * w / h), resize)
  image = np.asarray(image.resize(size, Image.BILINEAR))
  top = int(round((image.shape[0] - crop) / 2.0))
  left = int(round((image.shape[1] - crop) / 2.0))
  return image[top:top + crop, left:left + crop]


def test_eval_preprocessing_matches_torchvision_on_real_jpegs(flowers):
  files = sorted(flowers.glob("*/*/*.jpg"))
  assert len(files) == 25
  diffs = []
  for path in files:
    data = path.read_bytes()
    with Image.open(path) as image:  # The accurate IDCT is PIL's decode, bit for bit.
      np.testing.assert_array_equal(augment.decode(tf.constant(data)).numpy(),
                                    np.asarray(image.convert("RGB")))
    ours = augment.eval_crops(tf.constant(data)).numpy().astype(float)
    diffs.append(np.abs(ours - _torchvision_eval(path)).mean())
  # What remains is TF's antialiased bilinear kernel against PIL's (~0.16 levels).
  assert np.mean(diffs) <= 0.25 and max(diffs) < 0.5, diffs


def test_stretch_eval_resizes_both_sides_like_pil():
  image = smooth_image(150, 200) // 2 + noisy_image(150, 200) // 2
  out = augment.eval_crops(image, image_size=64, resize_size=64,
                            eval_resize="stretch").numpy().astype(int)
  ref = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR)).astype(int)
  assert np.abs(out - ref).mean() < 1.0
