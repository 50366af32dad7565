"""The eval forward pass, one home: uint8 crops -> class log-probabilities.

The eval step, `inference.Predictor` and the exported artifacts all call
`log_probabilities`, so a prediction equals what eval measured. With K crops
per image (the paper's 10) the softmax outputs are averaged, computed as
logsumexp(log_softmax) - log K so that one crop gives log_softmax exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Crops per image that eval, predict and export take: the centre crop, or the
# paper's four corners and centre with their mirrors.
CROPS = (1, 10)


def normalize_images(images, mean_rgb, std_rgb):
  """uint8 (or 0..255 float) RGB -> float32 standardised per channel (mean/std on [0, 1]).

  Done on the device: uint8 crosses the host-device link at a quarter of float32's bytes.
  """
  mean = jnp.asarray(mean_rgb, jnp.float32) * 255.0
  std = jnp.asarray(std_rgb, jnp.float32) * 255.0
  return (images.astype(jnp.float32) - mean) / std


# Index of the centre crop among the 10 (corners, centre, then the same mirrored).
CENTER_CROP_INDEX = 4


def per_crop_log_probabilities(logits_fn, images):
  """images [B, S, S, 3] or [B, K, S, S, 3] -> float32 [B, K, classes], one row per crop."""
  crops = images.shape[1] if images.ndim == 5 else 1
  logits = logits_fn(images.reshape((-1,) + images.shape[-3:])).astype(jnp.float32)
  return jax.nn.log_softmax(logits).reshape(-1, crops, logits.shape[-1])


def average_crops(log_p):
  """[B, K, classes] per-crop log-probabilities -> [B, classes], softmax averaged over K."""
  return jax.nn.logsumexp(log_p, axis=1) - jnp.log(float(log_p.shape[1]))


def log_probabilities(logits_fn, images):
  """images [B, S, S, 3] or [B, K, S, S, 3] -> float32 [B, classes], averaged over K crops.

  `logits_fn` maps a [N, S, S, 3] batch to logits.
  """
  return average_crops(per_crop_log_probabilities(logits_fn, images))


def model_log_probabilities(model, params, images, mean_rgb, std_rgb, *, per_crop=False):
  """uint8 crops -> log-probabilities for a linen model in eval mode.

  per_crop: [B, K, classes] (one row per crop) instead of the average over crops.
  """
  fn = per_crop_log_probabilities if per_crop else log_probabilities
  return fn(lambda x: model.apply({"params": params}, normalize_images(x, mean_rgb, std_rgb),
                                  train=False), images)


def topk_correct(scores, labels, k: int):
  """1.0 where the label is among the k highest scores, else 0.0."""
  k = min(k, scores.shape[-1])
  _, top = lax.top_k(scores, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


EVAL_SUM_KEYS = ("loss_sum", "top1_sum", "top5_sum", "center_top1_sum", "count")


def empty_eval_sums() -> dict:
  """The running totals of an eval pass before its first batch."""
  return {key: np.float32(0.0) for key in EVAL_SUM_KEYS}


def eval_sums(crop_log_probs, labels, mask):
  """(sum, count) metrics of a padded batch: padding (mask False) counts nowhere.

  crop_log_probs: [B, K, classes], one row per crop. Loss and top-k score the
  average over the crops; `center_top1_sum` scores the centre crop alone (the
  same forward pass, so the paper's 10-crop gain is measured for free).
  """
  mask = mask.astype(jnp.float32)
  log_probs = average_crops(crop_log_probs)
  center = crop_log_probs[:, CENTER_CROP_INDEX if crop_log_probs.shape[1] == 10 else 0]
  nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return dict(zip(EVAL_SUM_KEYS, (
      (nll * mask).sum(),
      (topk_correct(log_probs, labels, 1) * mask).sum(),
      (topk_correct(log_probs, labels, 5) * mask).sum(),
      (topk_correct(center, labels, 1) * mask).sum(),
      mask.sum(),
  )))
