"""Augmentation and eval crops on the accelerator, for images stored at a fixed size.

Traced into the jitted steps, these do to prepared uint8 [R, R, 3] images
(`alexnet_jax.prepare`) what the host pipeline does to JPEGs, for each
config.augmentation (its help in config_lib says what each does). Every example
draws from its own key (`example_keys`: config.seed and its global index), so a
resumed run, or one on other devices or processes, crops the same examples the
same way. Outputs are float32 on 0..255, ready for `evaluation.normalize_images`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax import eval_preprocess
from alexnet_jax.data.augmentations import IMAGENET_PCA_EIGVAL
from alexnet_jax.data.augmentations import IMAGENET_PCA_EIGVEC
from alexnet_jax.data.augmentations import INCEPTION_ASPECT_RANGE
from alexnet_jax.data.augmentations import INCEPTION_ATTEMPTS as _ATTEMPTS
from alexnet_jax.data.sources import AUGMENT_TAG as _AUGMENT_TAG


def example_keys(seed: int, global_indices):
  """One key per example: fold_in(fold_in(key(seed), tag), global index)."""
  root = jax.random.fold_in(jax.random.key(seed), _AUGMENT_TAG)
  return jax.vmap(lambda i: jax.random.fold_in(root, i))(global_indices)


def lighting_delta(key, sigma):
  """The paper's per-image RGB offset on [0, 1]: V @ (alpha * lambda), alpha ~ N(0, sigma^2)."""
  alpha = sigma * jax.random.normal(key, (3,), jnp.float32)
  return jnp.asarray(IMAGENET_PCA_EIGVEC, jnp.float32) @ (
      alpha * jnp.asarray(IMAGENET_PCA_EIGVAL, jnp.float32))


def _flip(image, key):
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def paper_crop(image, key, *, size, pca_sigma, random_flip):
  """One uint8 [R, R, 3] image -> float32 [size, size, 3]: random crop, flip, lighting."""
  crop_key, flip_key, light_key = jax.random.split(key, 3)
  height, width = image.shape[0], image.shape[1]
  y_key, x_key = jax.random.split(crop_key)
  y = jax.random.randint(y_key, (), 0, height - size + 1)
  x = jax.random.randint(x_key, (), 0, width - size + 1)
  out = lax.dynamic_slice(image, (y, x, 0), (size, size, 3)).astype(jnp.float32)
  if random_flip:
    out = _flip(out, flip_key)
  if pca_sigma:
    out = jnp.clip(out + 255.0 * lighting_delta(light_key, pca_sigma), 0.0, 255.0)
  return out


def sample_window(key, height, width, *, area_range, aspect_range=INCEPTION_ASPECT_RANGE):
  """torchvision's RandomResizedCrop window (y, x, h, w), as float32 scalars.

  Ten candidates (area fraction uniform in area_range, aspect log-uniform in
  aspect_range); the first that fits wins, else the centre crop of the whole
  image clamped to the aspect range.
  """
  area_key, ratio_key, y_key, x_key = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(area_key, (_ATTEMPTS,), minval=area_range[0],
                                             maxval=area_range[1])
  log_ratio = jax.random.uniform(ratio_key, (_ATTEMPTS,), minval=math.log(aspect_range[0]),
                                 maxval=math.log(aspect_range[1]))
  ratio = jnp.exp(log_ratio)
  w = jnp.round(jnp.sqrt(area * ratio))
  h = jnp.round(jnp.sqrt(area / ratio))
  fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = jnp.argmax(fits)
  h, w = h[first], w[first]
  y = jnp.floor(jax.random.uniform(y_key) * (height - h + 1))
  x = jnp.floor(jax.random.uniform(x_key) * (width - w + 1))
  # Fallback (torchvision's): the centre of the whole image, cut to the aspect range.
  lo, hi = aspect_range
  fb_h, fb_w = float(height), float(width)
  if width / height < lo:
    fb_h = float(round(width / lo))
  elif width / height > hi:
    fb_w = float(round(height * hi))
  fb_y, fb_x = float((height - fb_h) // 2), float((width - fb_w) // 2)
  ok = jnp.any(fits)
  return (jnp.where(ok, y, fb_y), jnp.where(ok, x, fb_x), jnp.where(ok, h, fb_h),
          jnp.where(ok, w, fb_w))


def resized_window(image, y, x, h, w, size):
  """The window [y, y+h) x [x, x+w) of an image resized to size x size (antialiased bilinear)."""
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([y, x]) * scale
  return jax.image.scale_and_translate(image.astype(jnp.float32), (size, size, 3), (0, 1),
                                       scale, translation, method="linear", antialias=True)


def inception_crop(image, key, *, size, area_range, random_flip):
  """One uint8 [R, R, 3] image -> float32 [size, size, 3]: random-resized crop and flip."""
  window_key, flip_key = jax.random.split(key)
  y, x, h, w = sample_window(window_key, image.shape[0], image.shape[1], area_range=area_range)
  out = jnp.clip(resized_window(image, y, x, h, w, size), 0.0, 255.0)
  return _flip(out, flip_key) if random_flip else out


def train_fn(config):
  """(uint8 [B, R, R, 3], global indices [B]) -> float32 [B, S, S, 3] for config.augmentation."""
  size, seed = int(config.image_size), int(config.seed)
  if config.augmentation == "paper":
    one = lambda image, key: paper_crop(image, key, size=size,
                                        pca_sigma=float(config.pca_lighting),
                                        random_flip=bool(config.random_flip))
  elif config.augmentation == "inception":
    area = tuple(float(a) for a in config.inception_area_range)
    one = lambda image, key: inception_crop(image, key, size=size, area_range=area,
                                            random_flip=bool(config.random_flip))
  else:
    return lambda images, indices: eval_preprocess.center_crop(images, size).astype(jnp.float32)

  def augment(images, indices):
    return jax.vmap(one)(images, example_keys(seed, indices))

  return augment


def eval_fn(config):
  """uint8 [B, R, R, 3] -> uint8 [B, S, S, 3] (centre) or [B, 10, S, S, 3]."""
  size = int(config.image_size)
  if int(config.eval_crops) == 10:
    return lambda images: eval_preprocess.ten_crops(images, size, xp=jnp)
  return lambda images: eval_preprocess.center_crop(images, size)


_MIX_TAG = 0x313


def mix(images, labels, keys, *, mixup_alpha: float, cutmix_alpha: float):
  """Mixup and CutMix of a float [B, S, S, C] batch, example i with example B-1-i.

  Returns (images, partner labels, lam): the loss is lam·CE(labels) +
  (1 − lam)·CE(partner labels). Each example draws from its own key (the
  `example_keys` of its global index, folded with a mixing tag), so a resumed
  run mixes the same way. lam ~ Beta(alpha, alpha); with both alphas set, an
  example is cut with probability 1/2, else mixed. CutMix pastes the partner's
  box of area (1 − lam)·S² (clipped at the borders; lam is then the area kept).
  """
  height, width = images.shape[1], images.shape[2]
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]

  def one(image, other, key):
    choice, mix_key, cut_key, y_key, x_key = jax.random.split(jax.random.fold_in(key, _MIX_TAG), 5)
    lam_mix = jax.random.beta(mix_key, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else 1.0
    lam_cut = jax.random.beta(cut_key, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else 1.0
    cut = (cutmix_alpha > 0) & ((mixup_alpha <= 0) | jax.random.bernoulli(choice))
    side = jnp.sqrt(1.0 - lam_cut)
    cy = jax.random.randint(y_key, (), 0, height)
    cx = jax.random.randint(x_key, (), 0, width)
    half_h = jnp.round(side * height / 2).astype(jnp.int32)
    half_w = jnp.round(side * width / 2).astype(jnp.int32)
    box = ((rows >= cy - half_h) & (rows < cy + half_h)) & ((cols >= cx - half_w)
                                                            & (cols < cx + half_w))
    cut_image = jnp.where(box[..., None], other, image)
    mixed = lam_mix * image + (1.0 - lam_mix) * other
    return (jnp.where(cut, cut_image, mixed),
            jnp.where(cut, 1.0 - box.mean(), lam_mix).astype(jnp.float32))

  mixed, lam = jax.vmap(one)(images, images[::-1], keys)
  return mixed.astype(images.dtype), labels[::-1], lam
