"""The paper's two-GPU model parallelism (docs/design.md): each device holds one tower.

`TowerAlexNet` is the per-device program of the `paper` network under `shard_map`
over a `"model"` mesh axis (2 towers, or more). Its params keep the single-device
model's names and are split on their last (output-feature) axis (`partition_specs`);
the towers exchange activations with `lax.all_gather`, LRN's edge channels included,
so the split equals the single-device model. Every tower computes the same loss from
the gathered logits, so the train step divides the loss by the tower count.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from alexnet_jax.models import layers
from alexnet_jax.models.alexnet import ARCHITECTURES
from alexnet_jax.models.alexnet import AlexNet
from alexnet_jax.models.lrn import local_response_norm
from alexnet_jax.parallel import MODEL_AXIS


def _gather_channels(x, axis_name):
  return lax.all_gather(x, axis_name, axis=x.ndim - 1, tiled=True)


def tower_lrn(x, axis_name, size=5, alpha=1e-4, beta=0.75, k=2.0):
  """LRN over the global channel axis when each tower holds a slice of it.

  Exchanges only the `size // 2` (left) and `(size - 1) // 2` (right) edge
  channels with the neighbouring towers; zeros beyond the first and last tower,
  exactly as the single-device layer pads.
  """
  before, after = size // 2, (size - 1) // 2
  n = lax.axis_size(axis_name)
  idx = lax.axis_index(axis_name)
  edges = jnp.concatenate([x[..., :after], x[..., x.shape[-1] - before:]], axis=-1)
  every = lax.all_gather(edges, axis_name)  # [towers, ..., after + before]
  left_of_me = every[jnp.maximum(idx - 1, 0)][..., after:]  # previous tower's last channels
  right_of_me = every[jnp.minimum(idx + 1, n - 1)][..., :after]  # next tower's first channels
  left_of_me = jnp.where(idx > 0, left_of_me, 0.0)
  right_of_me = jnp.where(idx < n - 1, right_of_me, 0.0)
  extended = jnp.concatenate([left_of_me, x, right_of_me], axis=-1)
  y = local_response_norm(extended.astype(jnp.float32), size, alpha, beta, k)
  return y[..., before:before + x.shape[-1]].astype(x.dtype)


class TowerAlexNet(AlexNet):
  """One tower of the `paper` network (the AlexNet fields it was built from, and how many
  towers share it); see the module docstring."""

  towers: int = 2
  axis_name: str = MODEL_AXIS

  @nn.compact
  def __call__(self, x, train: bool = False):
    arch = ARCHITECTURES["paper"]
    act = layers.ACTIVATION_FNS[self.activation]
    max_pool = layers.max_pool_fn(3 if self.overlapping_pool else 2)
    multiple = max(spec.groups for spec in arch.convs)
    x = x.astype(self.dtype)
    for spec in arch.convs:
      width = layers.scaled_width(spec.features, self.width_multiplier, multiple)
      if spec.groups == 1 and spec.name != "conv1":
        x = _gather_channels(x, self.axis_name)  # conv3 reads every tower
      # Init is irrelevant: a tower run starts from the single-device params.
      x = layers.conv(spec, width // self.towers, groups=1, dtype=self.dtype,
                      init_scheme="flax", fan_in=1)(x)
      x = act(x)
      if spec.lrn and self.lrn:
        x = tower_lrn(x, self.axis_name)
      if spec.pool:
        x = max_pool(x)
    x = x.reshape((x.shape[0], x.shape[1] * x.shape[2], x.shape[3]))
    # The single-device net flattens (H, W, C) over all channels: gather the
    # channels first, then flatten, so fc6's rows line up.
    x = _gather_channels(x, self.axis_name).reshape((x.shape[0], -1))
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")
    for i, (name, width) in enumerate(arch.hidden):
      if i:
        x = _gather_channels(x, self.axis_name)
      width = layers.scaled_width(width, self.width_multiplier)
      x = act(layers.dense(width // self.towers, dtype=self.dtype, init_scheme="flax",
                           bias_one=False, fan_in=1, name=name)(x))
      if self.dropout_rate > 0:
        x = dropout(x)
    x = _gather_channels(x, self.axis_name)
    x = layers.dense(self.num_classes // self.towers, dtype=self.dtype, init_scheme="flax",
                     bias_one=False, fan_in=1, name=arch.head)(x)
    return _gather_channels(x, self.axis_name).astype(jnp.float32)


def create_tower_model(model: nn.Module, towers: int) -> TowerAlexNet:
  """The tower program equivalent to a `paper` AlexNet built by `create_model`."""
  if model.variant != "paper":
    raise ValueError(
        f"config.parallelism.model={towers} splits the paper's two-tower network; "
        f"model.variant={model.variant!r} has no towers. Use model.variant='paper' or "
        "parallelism.model=1.")
  if model.num_classes % towers:
    raise ValueError(f"num_classes={model.num_classes} must divide into {towers} towers.")
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(AlexNet)
            if f.name not in ("parent", "name")}
  return TowerAlexNet(**fields, towers=towers)


def partition_specs(tree):
  """Splits every array leaf on its last axis over the towers; scalars stay whole.

  Applies to the params (kernels and biases split on output features), to the
  optimiser state, whose array leaves mirror the params, and to the train state.
  """
  return jax.tree.map(
      lambda x: P(*([None] * (x.ndim - 1)), MODEL_AXIS) if x.ndim else P(), tree)
