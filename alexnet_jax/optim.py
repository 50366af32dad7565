"""Optimiser and learning-rate schedules.

The optimiser is an Optax chain wrapped in `inject_hyperparams`, so the train step
sets the learning rate each step: a schedule of the step alone
(`create_learning_rate_fn`) times the scale of the paper's ÷10-on-plateau rule
(`PlateauState`, kept on the device and saved in every checkpoint's metadata).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

WEIGHT_DECAY_MASKS = ("all", "kernels")


def base_learning_rate(config) -> float:
  """`config.learning_rate`, optionally scaled linearly with the global batch (lr × batch/256)."""
  lr = float(config.learning_rate)
  if config.scale_lr_by_batch:
    lr *= config.batch_size / 256.0
  return lr


def total_train_steps(config, steps_per_epoch: int) -> int:
  """`num_train_steps` when positive, else `num_epochs` × steps per epoch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(round(config.num_epochs * steps_per_epoch))


# ---- schedules: name -> (config, base lr, steps per epoch, steps after warm-up) -> schedule ----


def _step_schedule(config, base, steps_per_epoch, warmup_steps, _):
  boundaries = {int(round(e * steps_per_epoch)) - warmup_steps: config.lr_decay_factor
                for e in config.lr_step_epochs}
  return optax.piecewise_constant_schedule(base, boundaries)


SCHEDULE_BUILDERS = {
    "constant": lambda config, base, *_: optax.constant_schedule(base),
    # The ÷10 of the plateau rule happens on the device (PlateauState).
    "plateau": lambda config, base, *_: optax.constant_schedule(base),
    "step": _step_schedule,
    "cosine": lambda config, base, spe, warmup, remaining: optax.cosine_decay_schedule(
        base, max(1, remaining)),
}


def create_learning_rate_fn(config, steps_per_epoch: int):
  """`step -> learning rate` for the step-only part of the schedule, after a linear
  warm-up of config.warmup_epochs (the plateau scale multiplies in on the device)."""
  base = base_learning_rate(config)
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  remaining = max(1, total_train_steps(config, steps_per_epoch)) - warmup_steps
  main = SCHEDULE_BUILDERS[config.lr_schedule](config, base, steps_per_epoch, warmup_steps,
                                               remaining)
  if warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, base, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


# ---- optimisers: name -> (config, decay) -> the update direction, before the learning rate ----


def weight_decay_mask(params, which: str):
  """Which leaves get weight decay: `all` (the paper) or `kernels` (not biases)."""
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def _momentum(config):
  return [optax.trace(decay=float(config.momentum), nesterov=config.nesterov)
          ] if config.momentum else []


def _adam(config):
  b1, b2 = config.adam_betas
  return [optax.scale_by_adam(b1=float(b1), b2=float(b2), eps=float(config.adam_eps))]


def _lars(config):
  return [optax.scale_by_trust_ratio(trust_coefficient=0.001), *_momentum(config)]


# Each entry: (direction, decoupled weight decay?). Coupled decay is added to
# the gradient before the direction (torch.optim.SGD/Adam, the paper);
# decoupled decay after it (AdamW). LARS scales the decayed gradient by the
# trust ratio |w| / |g + wd w|, as optax.lars.
OPTIMIZER_BUILDERS = {
    "sgd": (_momentum, None),
    "adam": (_adam, None),
    "adamw": (_adam, True),
    "lars": (_lars, False),
}


class EmaState(NamedTuple):
  """Polyak (exponential moving) average of the params after each update."""
  ema: Any


def track_ema(decay: float) -> optax.GradientTransformation:
  """Leaves the updates alone and keeps ema ← decay·ema + (1 − decay)·(params + updates).

  The last link of the chain, so it sees the final updates. Living in the
  optimiser state, the average is checkpointed, resumed and laid out with it.
  """

  def init(params):
    return EmaState(jax.tree.map(jnp.copy, params))

  def update(updates, state, params):
    ema = jax.tree.map(lambda e, p, u: decay * e + (1.0 - decay) * (p + u).astype(e.dtype),
                       state.ema, params, updates)
    return updates, EmaState(ema)

  return optax.GradientTransformation(init, update)


def ema_params(opt_state):
  """The averaged params inside an optimiser state (config.ema_decay > 0), else None."""
  return optax.tree_utils.tree_get(opt_state, "ema")


def create_optimizer(config) -> optax.GradientTransformation:
  """The Optax chain named by the config, with an injectable `learning_rate`.

  sgd, coupled (default): p ← p − lr·m,  m ← μ·m + (g + wd·p)   [torch.optim.SGD]
  sgd, decoupled:         p ← p − lr·(m + wd·p),  m ← μ·m + g
  adam (coupled) / adamw: Adam on g + wd·p / p ← p − lr·(adam(g) + wd·p)  [torch Adam/AdamW]
  lars:                   trust-ratio scaled SGD momentum (optax.lars).
  """
  direction, decoupled = OPTIMIZER_BUILDERS[config.optimizer]
  if decoupled is None:
    decoupled = config.decoupled_weight_decay
  wd = float(config.weight_decay)
  mask = lambda params: weight_decay_mask(params, config.weight_decay_mask)
  decay = [optax.add_decayed_weights(wd, mask)] if wd else []

  clip = [optax.clip_by_global_norm(float(config.clip_grad_norm))] if config.clip_grad_norm else []

  def make(learning_rate):
    parts = (clip + ([] if decoupled else decay) + direction(config)
             + (decay if decoupled else []))
    ema = [track_ema(float(config.ema_decay))] if config.ema_decay else []
    return optax.chain(*parts, optax.scale_by_learning_rate(learning_rate), *ema)

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
