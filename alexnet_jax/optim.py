"""Optimiser and learning-rate schedules.

The paper trains with SGD, momentum 0.9 and weight decay 5e-4 *added to the
gradient* before momentum (the coupled form `torch.optim.SGD(weight_decay=...)`
uses), and divides the learning rate by 10 whenever validation error stops
improving. The optimiser is an Optax chain wrapped in `inject_hyperparams`, so
the train step can set the learning rate each step from two parts:

* a *schedule* that depends only on the step (`constant`, `step`, `cosine`),
  computed inside the step by `create_learning_rate_fn`;
* a *plateau scale* decided on the host after each evaluation
  (`PlateauScheduler`), passed into the step as a scalar. Its state is plain
  JSON, saved in every checkpoint, so a resumed run decays at the same points.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "step", "plateau", "cosine")
OPTIMIZERS = ("sgd", "lars")
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
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(
        f"config.lr_schedule={config.lr_schedule!r} is not a known schedule; "
        f"choose one of {SCHEDULES}.")
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
  if which not in WEIGHT_DECAY_MASKS:
    raise ValueError(
        f"config.weight_decay_mask={which!r} is not allowed; choose one of {WEIGHT_DECAY_MASKS}.")
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def create_optimizer(config) -> optax.GradientTransformation:
  """The Optax chain named by the config, with an injectable `learning_rate`.

  sgd, coupled (default): p ← p − lr·m,  m ← μ·m + (g + wd·p)   [torch.optim.SGD]
  sgd, decoupled:         p ← p − lr·(m + wd·p),  m ← μ·m + g
  lars:                   optax.lars (trust-ratio scaled SGD momentum).
  """
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(
        f"config.optimizer={config.optimizer!r} is not known; choose one of {OPTIMIZERS}.")
  wd = float(config.weight_decay)
  momentum = float(config.momentum) or None
  mask = lambda params: weight_decay_mask(params, config.weight_decay_mask)

  def make(learning_rate):
    if config.optimizer == "lars":
      return optax.lars(learning_rate, weight_decay=wd, weight_decay_mask=mask,
                        momentum=momentum or 0.0, nesterov=config.nesterov)
    parts = []
    if wd and not config.decoupled_weight_decay:
      parts.append(optax.add_decayed_weights(wd, mask))
    if momentum:
      parts.append(optax.trace(decay=momentum, nesterov=config.nesterov))
    if wd and config.decoupled_weight_decay:
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)

  return optax.inject_hyperparams(make)(learning_rate=base_learning_rate(config))


def with_learning_rate(opt_state, learning_rate):
  """Returns `opt_state` whose injected learning rate is `learning_rate` (traceable)."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hyper)


@dataclasses.dataclass
class PlateauScheduler:
  """The paper's rule: ÷10 when validation accuracy stops improving, at most N times.

  `update(eval_top1)` is called on the host after each evaluation; `scale` is
  the factor the train step multiplies into the learning rate. Disabled (scale
  stays 1) unless the schedule is `plateau`.
  """

  enabled: bool = False
  patience: int = 1
  max_decays: int = 3
  factor: float = 0.1
  min_delta: float = 1e-3
  best: float = -1.0
  bad_evals: int = 0
  num_decays: int = 0
  scale: float = 1.0

  @classmethod
  def from_config(cls, config) -> "PlateauScheduler":
    return cls(enabled=config.lr_schedule == "plateau", patience=int(config.plateau_patience),
               max_decays=int(config.plateau_max_decays), factor=float(config.lr_decay_factor),
               min_delta=float(config.plateau_min_delta))

  def update(self, eval_top1: float) -> bool:
    """Records one evaluation; returns True when it decayed the learning rate."""
    if not self.enabled:
      return False
    if eval_top1 > self.best + self.min_delta:
      self.best, self.bad_evals = float(eval_top1), 0
      return False
    self.bad_evals += 1
    if self.bad_evals >= self.patience and self.num_decays < self.max_decays:
      self.scale *= self.factor
      self.num_decays += 1
      self.bad_evals = 0
      return True
    return False

  def state_dict(self) -> dict[str, Any]:
    return {k: getattr(self, k) for k in ("best", "bad_evals", "num_decays", "scale")}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    for k in ("best", "bad_evals", "num_decays", "scale"):
      if k in state:
        setattr(self, k, type(getattr(self, k))(state[k]))
