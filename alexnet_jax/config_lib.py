"""Config → objects, and config validation before anything is compiled.

Every config mistake should fail in the first second with a message naming the
key, the value and what is allowed, not minutes later inside XLA or tf.data.
"""

from __future__ import annotations

import jax.numpy as jnp

AUGMENTATIONS = ("paper", "inception", "none")
EVAL_CROPS = (1, 10)


def model_overrides(config) -> dict:
  """`config.model` minus `variant`, plus the compute dtype from `half_precision`."""
  overrides = {k: v for k, v in config.model.items() if k != "variant"}
  overrides["dtype"] = jnp.bfloat16 if config.half_precision else jnp.float32
  return overrides


def create_model(config, num_classes: int):
  """The linen module the config describes."""
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  return models.create_model(config.model.variant, num_classes=num_classes,
                             **model_overrides(config))


def _fail(key, value, allowed):
  raise ValueError(f"config.{key}={value!r} is not allowed: {allowed}.")


def validate_config(config, *, num_devices: int | None = None) -> None:
  """Raises ValueError for values that cannot work, before any compilation."""
  from alexnet_jax import models, optim  # pylint: disable=g-import-not-at-top
  if config.model.variant not in models.VARIANTS:
    _fail("model.variant", config.model.variant, f"choose one of {tuple(models.VARIANTS)}")
  if config.augmentation not in AUGMENTATIONS:
    _fail("augmentation", config.augmentation, f"choose one of {AUGMENTATIONS}")
  if config.eval_crops not in EVAL_CROPS:
    _fail("eval_crops", config.eval_crops, "use 1 (centre crop) or 10 (the paper's 10 crops)")
  if config.lr_schedule not in optim.SCHEDULES:
    _fail("lr_schedule", config.lr_schedule, f"choose one of {optim.SCHEDULES}")
  if config.optimizer not in optim.OPTIMIZERS:
    _fail("optimizer", config.optimizer, f"choose one of {optim.OPTIMIZERS}")
  if config.weight_decay_mask not in optim.WEIGHT_DECAY_MASKS:
    _fail("weight_decay_mask", config.weight_decay_mask, f"choose one of {optim.WEIGHT_DECAY_MASKS}")
  for key in ("learning_rate", "batch_size", "eval_batch_size", "image_size"):
    if not config[key] > 0:
      _fail(key, config[key], "it must be > 0")
  if config.weight_decay < 0:
    _fail("weight_decay", config.weight_decay, "it must be >= 0")
  if not 0 <= config.momentum < 1:
    _fail("momentum", config.momentum, "it must be in [0, 1)")
  if config.model.dropout_rate is not None and not 0 <= config.model.dropout_rate < 1:
    _fail("model.dropout_rate", config.model.dropout_rate, "it must be in [0, 1)")
  if config.num_train_steps <= 0 and not config.num_epochs > 0:
    _fail("num_epochs", config.num_epochs,
          "it must be > 0 unless config.num_train_steps is > 0")
  if config.resize_size < config.image_size:
    _fail("resize_size", config.resize_size, f"it must be >= image_size ({config.image_size})")
  if config.dataset == "imagefolder" and not config.data_dir:
    _fail("data_dir", config.data_dir,
          "dataset 'imagefolder' needs --config.data_dir=ROOT with ROOT/train/<class>/* "
          "and ROOT/val/<class>/*")
  if config.parallelism.model not in (1, 2, 4):
    _fail("parallelism.model", config.parallelism.model,
          "use 1 (data parallel) or 2 (the paper's two towers; 4 splits further)")
  if config.parallelism.model > 1 and config.model.variant != "paper":
    _fail("parallelism.model", config.parallelism.model,
          f"tower parallelism splits the 'paper' variant only (model.variant is "
          f"{config.model.variant!r}); use parallelism.model=1")
  if num_devices:
    for key in ("batch_size", "eval_batch_size"):
      if config[key] % num_devices:
        _fail(key, config[key],
              f"the global batch must be a multiple of the data-parallel device count "
              f"{num_devices} (all devices of all processes, divided by "
              f"parallelism.model); e.g. {max(1, config[key] // num_devices) * num_devices}")
