"""AlexNet and its descendants as one Flax linen module, built from a table of layouts.

An `ARCHITECTURES` row fixes a variant's layout and the defaults of its ablation
fields, which `create_model(variant, num_classes=..., **overrides)` overrides. The
variants are compared in README's Variants table; docs/extending.md adds one.

Layer (parameter) names are conv1..conv5, fc6, fc7, fc8 in the ImageNet variants
(the PyTorch converter relies on them). The `intermediates` collection also sees
`pool1`, `pool2`, `pool5`, `avgpool` (if any) and `flatten`.

`model.apply({"params": p}, images, train=False)` takes normalised NHWC float images
and returns float32 logits (float64 with `dtype=float64`, which needs
jax_enable_x64); with `train=True` and dropout, pass `rngs={"dropout": key}`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.models import cpu_kernels
from alexnet_jax.models import layers
from alexnet_jax.models.layers import ACTIVATIONS
from alexnet_jax.models.layers import INITS
from alexnet_jax.models.lrn import LocalResponseNorm


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One conv layer: conv -> activation [-> LRN] [-> max-pool]."""
  name: str
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  lrn: bool = False  # LRN here when the model's `lrn` is on.
  pool: bool = False  # Max-pool after this layer.
  bias_one: bool = False  # `init="paper"` sets this layer's bias to 1.


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Fixed layout of a variant (defaults: the ImageNet AlexNets'); the ablation fields
  live on the module."""
  convs: tuple
  defaults: dict  # default ablation settings
  # ((name, width), ...) hidden FC layers; biases 1 under paper init.
  hidden: tuple = (("fc6", 4096), ("fc7", 4096))
  head: str = "fc8"  # name of the classifier layer
  avg_pool: Optional[tuple] = None  # adaptive average pool output (H, W), or None
  # True: torch style (before fc6, fc7); False: paper style (on the outputs of
  # fc6, fc7, i.e. before fc7, fc8).
  dropout_before_hidden: bool = True
  image_size: int = 224


_IMAGENET_DEFAULTS = dict(activation="relu", overlapping_pool=True,
                          dropout_rate=0.5, width_multiplier=1.0,
                          dtype=jnp.dtype("float32"), cpu_kernels="auto")


def _single_tower(*widths):
  """The single-tower ImageNet convs (torchvision's and the seed's), by conv1..conv5 width."""
  c1, c2, c3, c4, c5 = widths
  return (ConvSpec("conv1", c1, 11, stride=4, padding=2, pool=True),
          ConvSpec("conv2", c2, 5, padding=2, pool=True, bias_one=True),
          ConvSpec("conv3", c3, 3, padding=1),
          ConvSpec("conv4", c4, 3, padding=1, bias_one=True),
          ConvSpec("conv5", c5, 3, padding=1, pool=True, bias_one=True))


ARCHITECTURES = {
    # Krizhevsky et al. (2012). conv1 pads 2 so 224 -> 55 (the paper's "224" needs
    # padding; 227 without).
    "paper": Architecture(
        convs=(
            ConvSpec("conv1", 96, 11, stride=4, padding=2, lrn=True, pool=True),
            ConvSpec("conv2", 256, 5, padding=2, groups=2, lrn=True, pool=True,
                     bias_one=True),
            ConvSpec("conv3", 384, 3, padding=1),
            ConvSpec("conv4", 384, 3, padding=1, groups=2, bias_one=True),
            ConvSpec("conv5", 256, 3, padding=1, groups=2, pool=True,
                     bias_one=True),
        ),
        dropout_before_hidden=False,
        defaults=dict(_IMAGENET_DEFAULTS, lrn=True, init="paper"),
    ),
    # torchvision's alexnet (the "one weird trick" single-tower layout).
    "torchvision": Architecture(
        convs=_single_tower(64, 192, 384, 256, 256),
        avg_pool=(6, 6),
        defaults=dict(_IMAGENET_DEFAULTS, lrn=False, init="torch"),
    ),
    # The PyTorch "AlexNet for flowers" half-width net.
    "seed": Architecture(
        convs=_single_tower(48, 128, 192, 192, 128),
        hidden=(("fc6", 2048), ("fc7", 2048)),
        defaults=dict(_IMAGENET_DEFAULTS, lrn=False, init="seed"),
    ),
    # For 32x32 inputs, after cuda-convnet's CIFAR-10 nets; no dropout (they had none,
    # and it slows tiny-data runs).
    "small": Architecture(
        convs=(
            ConvSpec("conv1", 64, 5, padding=2, lrn=True, pool=True),
            ConvSpec("conv2", 64, 5, padding=2, lrn=True, pool=True,
                     bias_one=True),
        ),
        hidden=(("fc3", 384), ("fc4", 192)),
        head="fc5",
        dropout_before_hidden=False,
        image_size=32,
        defaults=dict(_IMAGENET_DEFAULTS, lrn=True, dropout_rate=0.0, init="flax"),
    ),
}

VARIANTS = tuple(ARCHITECTURES)
# float64: a reference mode (tests comparing against float64 PyTorch, where
# float32 rounding can flip a ReLU); it needs jax_enable_x64.
DTYPES = ("float32", "bfloat16", "float16", "float64")
OVERRIDES = ("activation", "lrn", "overlapping_pool", "dropout_rate",
             "width_multiplier", "init", "dtype", "cpu_kernels")

def default_image_size(variant: str) -> int:
  """The input size a variant is designed for (224, or 32 for `small`)."""
  return _architecture(variant).image_size


def _architecture(variant):
  if variant not in ARCHITECTURES:
    raise ValueError(f"Unknown model variant {variant!r}; "
                     f"allowed: {', '.join(ARCHITECTURES)}.")
  return ARCHITECTURES[variant]


class AlexNet(nn.Module):
  """AlexNet family; build it with `create_model` (which validates fields).

  `variant` fixes the layout; the other fields are the ablations (config_lib.FIELDS
  says what each means). `initializer` is config.model.init (a linen module cannot
  have a field named `init`). `dtype` is the compute dtype: params stay float32.
  `cpu_kernels` ("auto", "on", "off") picks alexnet_jax.models.cpu_kernels' formulations.
  """

  variant: str = "paper"
  num_classes: int = 1000
  activation: str = "relu"
  lrn: bool = True
  overlapping_pool: bool = True
  dropout_rate: float = 0.5
  width_multiplier: float = 1.0
  initializer: str = "paper"
  dtype: Any = jnp.float32
  cpu_kernels: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    arch = _architecture(self.variant)
    act = layers.ACTIVATION_FNS[self.activation]
    if x.ndim != 4:
      raise ValueError(f"AlexNet expects NHWC images, got shape {x.shape}.")
    input_shape = x.shape
    window = 3 if self.overlapping_pool else 2
    max_pool = layers.max_pool_fn(window, self.cpu_kernels)
    # Every conv width is a multiple of the largest group count, so a grouped
    # conv's input (the previous layer's output) splits evenly into towers too.
    multiple = max(spec.groups for spec in arch.convs)
    x = x.astype(self.dtype)
    for spec in arch.convs:
      x = layers.conv(spec, layers.scaled_width(spec.features, self.width_multiplier, multiple),
                      groups=spec.groups, dtype=self.dtype, init_scheme=self.initializer,
                      fan_in=x.shape[-1] // spec.groups * spec.kernel ** 2)(x)
      x = act(x)
      if spec.lrn and self.lrn:
        x = LocalResponseNorm(name="lrn" + spec.name[len("conv"):])(x)
      if spec.pool:
        if min(x.shape[1:3]) < window:
          raise ValueError(
              f"Images of shape {input_shape[1:3]} are too small for variant "
              f"{self.variant!r}: {spec.name} outputs {x.shape[1:3]}, smaller than the "
              f"{window}x{window} pooling window. The variant is designed for "
              f"{arch.image_size}x{arch.image_size} inputs.")
        x = max_pool(x)
        self.sow("intermediates", "pool" + spec.name[len("conv"):], x)

    if arch.avg_pool is not None:
      x = layers.adaptive_avg_pool(x, arch.avg_pool)
      self.sow("intermediates", "avgpool", x)
    # NHWC flattens (H, W, C); the converter permutes PyTorch's (C, H, W).
    x = x.reshape((x.shape[0], -1))
    self.sow("intermediates", "flatten", x)

    dropout = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")
    use_dropout = self.dropout_rate > 0
    for name, width in arch.hidden:
      if use_dropout and arch.dropout_before_hidden:
        x = dropout(x)
      x = act(layers.dense(layers.scaled_width(width, self.width_multiplier), dtype=self.dtype,
                           init_scheme=self.initializer, bias_one=True, fan_in=x.shape[-1],
                           name=name)(x))
      if use_dropout and not arch.dropout_before_hidden:
        x = dropout(x)
    x = layers.dense(self.num_classes, dtype=self.dtype, init_scheme=self.initializer,
                     bias_one=False, fan_in=x.shape[-1], name=arch.head)(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))


def _not_allowed(key, value, rule):
  return ValueError(f"model.{key}={value!r} is not allowed: {rule}.")


def _is_number(value):
  return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def check_override(key, value):
  """Validates one override (config_lib uses this rule too); returns its canonical form."""
  if key in ("activation", "init") and value not in (ACTIVATIONS if key == "activation" else INITS):
    choices = ACTIVATIONS if key == "activation" else INITS
    raise _not_allowed(key, value, f"choose one of {', '.join(choices)}")
  if key in ("lrn", "overlapping_pool"):
    if not isinstance(value, (bool, np.bool_)):
      raise _not_allowed(key, value, "it must be True or False")
    value = bool(value)
  elif key == "dropout_rate":
    if not _is_number(value) or not 0.0 <= value < 1.0:
      raise _not_allowed(key, value, "it must be a number in [0, 1)")
    value = float(value)
  elif key == "width_multiplier":
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
      raise _not_allowed(key, value, "it must be a positive number")
    value = float(value)
  elif key == "dtype":
    try:
      name = jnp.dtype(value).name
    except TypeError:
      name = None
    if name not in DTYPES:
      raise _not_allowed(key, value, f"choose one of {', '.join(DTYPES)}")
    value = jnp.dtype(name)
  elif key == "cpu_kernels":
    if isinstance(value, bool):
      value = "on" if value else "off"
    if value not in cpu_kernels.SETTINGS:
      raise _not_allowed(key, value, f"choose one of {', '.join(cpu_kernels.SETTINGS)} "
                         "(auto: on when JAX's default backend is the CPU)")
  return value


def create_model(variant: str, *, num_classes: int, **overrides) -> AlexNet:
  """Builds a variant with its defaults, then applies `overrides` (any of `OVERRIDES`).

  An override of None means the variant's default (config placeholders pass through).
  Raises ValueError for an unknown variant or override key, or a bad value.
  """
  arch = _architecture(variant)
  if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
      or num_classes < 1):
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
  unknown = sorted(set(overrides) - set(OVERRIDES))
  if unknown:
    raise ValueError(f"Unknown model override(s) {unknown}; "
                     f"allowed: {', '.join(OVERRIDES)}.")
  fields = dict(arch.defaults)
  for key, value in overrides.items():
    if value is not None:
      fields[key] = check_override(key, value)
  fields["initializer"] = fields.pop("init")
  return AlexNet(variant=variant, num_classes=int(num_classes), **fields)


def init_params(model, image_size: int, rng):
  """The model's parameters for square images of `image_size` pixels."""
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init({"params": rng}, images, train=False)["params"]


def count_params(params) -> int:
  """Total number of scalars in a parameter pytree (arrays or shape structs)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64)
                 for leaf in jax.tree_util.tree_leaves(params)))


def forward_macs(variant: str, image_size: Optional[int] = None,
                 num_classes: int = 1000, **overrides) -> int:
  """Multiply-adds of the conv and dense layers for one image.

  Counted from the shapes the model actually produces (traced abstractly, no
  computation): a conv contributes output elements x kernel area x input
  channels per group, a dense layer in x out. Activations, LRN, pooling and
  biases are not counted, as is conventional.
  """
  model = create_model(variant, num_classes=num_classes, **overrides)
  size = image_size or default_image_size(variant)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  macs = []

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__":
      if isinstance(module, nn.Conv):
        in_ch = args[0].shape[-1] // module.feature_group_count
        macs.append(int(np.prod(out.shape[1:])) * int(np.prod(module.kernel_size))
                    * in_ch)
      elif isinstance(module, nn.Dense):
        macs.append(int(args[0].shape[-1]) * int(out.shape[-1]))
    return out

  def run(x):
    with nn.intercept_methods(count):
      return model.init_with_output(jax.random.key(0), x)[0]

  jax.eval_shape(run, images)
  return int(sum(macs))
