"""Optimiser and learning-rate schedules.

The paper trains with SGD, momentum 0.9 and weight decay 5e-4 *added to the
gradient* before momentum (the coupled form `torch.optim.SGD(weight_decay=...)`
uses), and divides the learning rate by 10 whenever validation error stops
improving. The optimiser is an Optax chain wrapped in `inject_hyperparams`, so
the train step can set the learning rate each step from two parts:

* a *schedule* that depends only on the step (`constant`, `step`, `cosine`),
  computed inside the step by `create_learning_rate_fn`;
* a *plateau scale* updated on the device after each evaluation
  (`PlateauState`, part of the train state; no host round trip), saved in
  every checkpoint's metadata so a resumed run decays at the same points.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "step", "plateau", "cosine")
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
WEIGHT_DECAY_MASKS = ("all", "kernels")


def base_learning_rate(config) -> float:
  """`config.learning_rate`, optionally scaled linearly with the global batch (lr × batch/256)."""
  lr = float(config.learning_rate)
  if config.scale_lr_by_batch:
    lr *= config.batch_size / 256.0
  return lr


def create_learning_rate_fn(config, steps_per_epoch: int):
  """Returns `step -> learning rate` for the step-only part of the schedule.

  For `plateau` this is the constant base rate; the host multiplies in the
  plateau scale. `step` decays by `lr_decay_factor` at each of
  `lr_step_epochs`; `cosine` decays to zero over the run. Both warm up linearly
  for `warmup_epochs`.
  """
  base = base_learning_rate(config)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  total_steps = max(1, total_train_steps(config, steps_per_epoch))

  if config.lr_schedule in ("constant", "plateau"):
    main = optax.constant_schedule(base)
  elif config.lr_schedule == "step":
    boundaries = {
        int(round(e * steps_per_epoch)) - warmup_steps: config.lr_decay_factor
        for e in config.lr_step_epochs
    }
    main = optax.piecewise_constant_schedule(base, boundaries)
  else:  # cosine
    main = optax.cosine_decay_schedule(base, max(1, total_steps - warmup_steps))

  if warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, base, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def total_train_steps(config, steps_per_epoch: int) -> int:
  """`num_train_steps` when positive, else `num_epochs` × steps per epoch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(round(config.num_epochs * steps_per_epoch))


def weight_decay_mask(params, which: str):
  """Which leaves get weight decay: `all` (the paper) or `kernels` (not biases)."""
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def create_optimizer(config) -> optax.GradientTransformation:
  """The Optax chain named by the config, with an injectable `learning_rate`.

  sgd, coupled (default): p ← p − lr·m,  m ← μ·m + (g + wd·p)   [torch.optim.SGD]
  sgd, decoupled:         p ← p − lr·(m + wd·p),  m ← μ·m + g
  adam, coupled:          Adam on g + wd·p                        [torch.optim.Adam]
  adamw (or adam, decoupled): p ← p − lr·(adam(g) + wd·p)         [torch.optim.AdamW]
  lars:                   optax.lars (trust-ratio scaled SGD momentum).
  """
  wd = float(config.weight_decay)
  momentum = float(config.momentum) or None
  mask = lambda params: weight_decay_mask(params, config.weight_decay_mask)

  def make(learning_rate):
    if config.optimizer == "lars":
      return optax.lars(learning_rate, weight_decay=wd, weight_decay_mask=mask,
                        momentum=momentum or 0.0, nesterov=config.nesterov)
    decoupled = config.decoupled_weight_decay or config.optimizer == "adamw"
    parts = []
    if wd and not decoupled:
      parts.append(optax.add_decayed_weights(wd, mask))
    if config.optimizer in ("adam", "adamw"):
      b1, b2 = config.adam_betas
      parts.append(optax.scale_by_adam(b1=float(b1), b2=float(b2), eps=float(config.adam_eps)))
    elif momentum:
      parts.append(optax.trace(decay=momentum, nesterov=config.nesterov))
    if wd and decoupled:
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)

  return optax.inject_hyperparams(make)(learning_rate=base_learning_rate(config))


def with_learning_rate(opt_state, learning_rate):
  """Returns `opt_state` whose injected learning rate is `learning_rate` (traceable)."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hyper)


@flax.struct.dataclass
class PlateauState:
  """The paper's ÷10-on-plateau rule as device scalars (part of the train state).

  best: highest eval top-1 so far; bad_evals: evals since it improved;
  num_decays: decays so far; scale: what multiplies the learning rate.
  """
  best: jax.Array
  bad_evals: jax.Array
  num_decays: jax.Array
  scale: jax.Array

  @classmethod
  def initial(cls) -> "PlateauState":
    return cls(best=jnp.float32(-1.0), bad_evals=jnp.int32(0), num_decays=jnp.int32(0),
               scale=jnp.float32(1.0))

  def to_dict(self) -> dict[str, Any]:
    """JSON-safe values (for checkpoint metadata)."""
    host = jax.device_get(self)
    return {"best": float(host.best), "bad_evals": int(host.bad_evals),
            "num_decays": int(host.num_decays), "scale": float(host.scale)}

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "PlateauState":
    dtypes = {"best": jnp.float32, "bad_evals": jnp.int32, "num_decays": jnp.int32,
              "scale": jnp.float32}
    return cls.initial().replace(**{k: dtypes[k](v) for k, v in values.items() if k in dtypes})


def plateau_update_fn(config):
  """`(PlateauState, eval_top1) -> PlateauState` for the config (identity unless plateau).

  Improvement means eval_top1 > best + plateau_min_delta; after
  plateau_patience evals without it the scale is multiplied by
  lr_decay_factor, at most plateau_max_decays times.
  """
  enabled = config.lr_schedule == "plateau"
  patience, max_decays = int(config.plateau_patience), int(config.plateau_max_decays)
  factor, min_delta = float(config.lr_decay_factor), float(config.plateau_min_delta)

  def update(state: PlateauState, top1) -> PlateauState:
    if not enabled:
      return state
    top1 = jnp.asarray(top1, jnp.float32)
    improved = top1 > state.best + min_delta
    bad = jnp.where(improved, 0, state.bad_evals + 1)
    decay = (~improved) & (bad >= patience) & (state.num_decays < max_decays)
    return PlateauState(
        best=jnp.where(improved, top1, state.best),
        bad_evals=jnp.where(decay, 0, bad).astype(jnp.int32),
        num_decays=(state.num_decays + decay).astype(jnp.int32),
        scale=jnp.where(decay, state.scale * factor, state.scale).astype(jnp.float32))

  return update
