"""On-device augmentation against its definition (uniform crops, fair flips, the paper's
lighting scale, torchvision's crop sampler) and its keys (same examples, same crops)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from alexnet_jax import config_lib
from alexnet_jax.data import device_augment

R, S = 20, 16


def _coordinates(r=R):
  """uint8 [r, r, 3]: pixel (y, x) holds (y, x, 0), so a crop reveals where it came from."""
  y, x = np.mgrid[0:r, 0:r]
  return np.stack([y, x, np.zeros_like(y)], -1).astype(np.uint8)


def _many(fn, n, image):
  images = jnp.broadcast_to(jnp.asarray(image), (n,) + image.shape)
  return np.asarray(jax.jit(fn)(images, jnp.arange(n)))


def _config(**overrides):
  c = config_lib.base_config()
  c.image_size, c.resize_size = S, R
  c.update(overrides)
  return c


def test_paper_crop_offsets_are_uniform_and_flips_fair():
  n = 6000
  out = _many(device_augment.train_fn(_config(augmentation="paper", pca_lighting=0.0)), n,
              _coordinates())
  assert out.shape == (n, S, S, 3) and out.dtype == np.float32
  mirrored = out[:, 0, 0, 1] > out[:, 0, -1, 1]
  left = np.where(mirrored, out[:, 0, -1, 1], out[:, 0, 0, 1])
  top = out[:, 0, 0, 0]
  # Every crop is a whole S x S window of the image, mirrored or not.
  np.testing.assert_array_equal(np.where(mirrored, out[:, -1, 0, 1], out[:, -1, -1, 1]) - left,
                                S - 1)
  for offsets in (top, left):
    counts = np.bincount(offsets.astype(int), minlength=R - S + 1)
    assert len(counts) == R - S + 1 and counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-3
  assert stats.binomtest(int(mirrored.sum()), n, 0.5).pvalue > 1e-3


def test_paper_lighting_has_the_configured_scale():
  n, sigma = 4000, 0.1
  grey = np.full((R, R, 3), 128, np.uint8)
  out = _many(device_augment.train_fn(_config(augmentation="paper", pca_lighting=sigma,
                                               random_flip=False)), n, grey)
  delta = (out[:, 0, 0] - 128.0) / 255.0
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1], out.shape))  # per image
  eigvec = np.asarray(device_augment.IMAGENET_PCA_EIGVEC)
  eigval = np.asarray(device_augment.IMAGENET_PCA_EIGVAL)
  alpha = np.linalg.solve(eigvec, delta.T).T / eigval
  np.testing.assert_allclose(alpha.std(0), sigma, rtol=0.06)
  np.testing.assert_allclose(alpha.mean(0), 0.0, atol=0.01)
  white = _many(device_augment.train_fn(_config(augmentation="paper", pca_lighting=5.0)), 64,
                np.full((R, R, 3), 255, np.uint8))
  assert white.max() == 255.0 and white.min() >= 0.0  # clipped, not wrapped


def _torchvision_windows(n, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=0):
  """torchvision.transforms.RandomResizedCrop.get_params, in numpy (the reference)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    for _ in range(10):
      area = height * width * rng.uniform(*scale)
      aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
      w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
      if 0 < w <= width and 0 < h <= height:
        out.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
        break
    else:
      out.append(((height - height) // 2, (width - width) // 2, height, width))
  return np.array(out, float)


def test_inception_windows_follow_torchvisions_sampler():
  n, height, width = 3000, 300, 400
  keys = jax.random.split(jax.random.key(0), n)
  ours = np.stack([np.asarray(v) for v in jax.vmap(lambda k: device_augment.sample_window(
      k, height, width, area_range=(0.08, 1.0)))(keys)], 1)
  y, x, h, w = ours.T
  assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
  ref = _torchvision_windows(n, height, width)
  for name, a, b in [("area", h * w, ref[:, 2] * ref[:, 3]), ("aspect", w / h, ref[:, 3] / ref[:, 2]),
                     ("top", y / (height - h + 1), ref[:, 0] / (height - ref[:, 2] + 1))]:
    assert stats.ks_2samp(a, b).pvalue > 1e-3, name


def test_inception_crop_shows_its_window():
  image = (np.linspace(0, 255, R)[:, None, None] * np.ones((1, R, 3))).astype(np.uint8)
  window = device_augment.resized_window(jnp.asarray(image), 4.0, 2.0, 8.0, 8.0, 8)
  np.testing.assert_allclose(np.asarray(window)[:, 0, 0], image[4:12, 0, 0], atol=1.0)
  out = _many(device_augment.train_fn(_config(augmentation="inception")), 16, image)
  assert out.shape == (16, S, S, 3) and 0 <= out.min() and out.max() <= 255


@pytest.mark.parametrize("augmentation", ["paper", "inception"])
def test_crops_are_a_function_of_the_example_index(augmentation):
  fn = jax.jit(device_augment.train_fn(_config(augmentation=augmentation)))
  images = jnp.broadcast_to(jnp.asarray(_coordinates()), (8, R, R, 3))
  a = np.asarray(fn(images, jnp.arange(8)))
  resumed = np.asarray(fn(images[4:], jnp.arange(4, 8)))  # same indices, another batch
  np.testing.assert_array_equal(a[4:], resumed)
  other = np.asarray(fn(images, jnp.arange(8, 16)))
  assert not np.array_equal(a, other)
  assert len({img.tobytes() for img in a}) == 8  # every example its own crop


def test_eval_crops_match_the_host_definitions():
  image = np.random.default_rng(0).integers(0, 256, (2, 27, 27, 3), np.uint8)
  centre = np.asarray(device_augment.eval_fn(_config(image_size=24, eval_crops=1))(image))
  top = int(round((27 - 24) / 2))  # 1.5 -> 2: torchvision rounds half to even
  np.testing.assert_array_equal(centre, image[:, top:top + 24, top:top + 24])
  ten = np.asarray(device_augment.eval_fn(_config(image_size=24, eval_crops=10))(image))
  assert ten.shape == (2, 10, 24, 24, 3)
  np.testing.assert_array_equal(ten[:, 1], image[:, :24, 3:])
  np.testing.assert_array_equal(ten[:, 4], centre)
  np.testing.assert_array_equal(ten[:, 5:], ten[:, :5, :, ::-1])


def test_mixup_is_a_convex_combination_with_the_reversed_batch():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 255, (6, 8, 8, 3)), jnp.float32)
  labels = jnp.arange(6)
  keys = device_augment.example_keys(0, jnp.arange(100, 106))
  mixed, partner, lam = device_augment.mix(images, labels, keys, mixup_alpha=0.4, cutmix_alpha=0)
  assert list(partner) == [5, 4, 3, 2, 1, 0]
  assert np.all((np.asarray(lam) > 0) & (np.asarray(lam) < 1)) and len(set(np.asarray(lam))) == 6
  expected = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[::-1]
  np.testing.assert_allclose(mixed, expected, rtol=1e-6)
  again = device_augment.mix(images, labels, keys, mixup_alpha=0.4, cutmix_alpha=0)
  np.testing.assert_array_equal(again[0], mixed)  # keys decide: a resume mixes alike


def test_cutmix_label_mass_is_the_area_of_the_pasted_box():
  # Example i is the constant i, so each pixel says whose it is.
  images = jnp.broadcast_to(jnp.arange(8.0)[:, None, None, None], (8, 16, 16, 3))
  keys = device_augment.example_keys(3, jnp.arange(8))
  mixed, partner, lam = device_augment.mix(images, jnp.arange(8), keys, mixup_alpha=0,
                                           cutmix_alpha=1.0)
  mixed, lam = np.asarray(mixed), np.asarray(lam)
  for i in range(8):
    own = mixed[i, ..., 0] == i
    pasted = mixed[i, ..., 0] == 7 - i
    assert np.all(own | pasted)
    assert own.mean() == pytest.approx(lam[i], abs=1e-6)  # label mass = area kept
    if pasted.any():  # the pasted pixels form one axis-aligned rectangle
      ys, xs = np.nonzero(pasted)
      assert pasted[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
  assert 0 < lam.min() and lam.max() <= 1 and (lam < 1).sum() >= 4
  both = device_augment.mix(images, jnp.arange(8), keys, mixup_alpha=1.0, cutmix_alpha=1.0)[0]
  blended = [not set(np.unique(np.asarray(both[i, ..., 0]))) <= {i, 7 - i} for i in range(8)]
  assert any(blended) and not all(blended)  # some examples mixed, the others cut
