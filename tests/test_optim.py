"""Our Optax chains against torch.optim (SGD, Adam, AdamW), the schedules and the plateau
rule against hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import optim
from alexnet_jax import config_lib

torch = pytest.importorskip("torch")


def _config(**kw):
  c = config_lib.base_config()
  c.update(kw)
  return c


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("decay_mask", ["all", "kernels"])
def test_sgd_matches_torch(nesterov, decay_mask):
  config = _config(learning_rate=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov,
                   weight_decay_mask=decay_mask)
  rng = np.random.default_rng(0)
  params = {"fc": {"kernel": rng.normal(size=(5, 3)).astype(np.float32),
                   "bias": rng.normal(size=(3,)).astype(np.float32)}}
  grads_seq = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
               for _ in range(6)]
  lrs = [0.05, 0.05, 0.05, 0.005, 0.005, 0.0005]  # a plateau decay mid-run

  tx = optim.create_optimizer(config)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for g, lr in zip(grads_seq, lrs):
    state = optim.with_learning_rate(state, lr)
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  kernel = torch.tensor(params["fc"]["kernel"], dtype=torch.float64, requires_grad=True)
  bias = torch.tensor(params["fc"]["bias"], dtype=torch.float64, requires_grad=True)
  groups = [{"params": [kernel], "weight_decay": 5e-4},
            {"params": [bias], "weight_decay": 5e-4 if decay_mask == "all" else 0.0}]
  opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=nesterov)
  for g, lr in zip(grads_seq, lrs):
    for group in opt.param_groups:
      group["lr"] = lr
    kernel.grad = torch.tensor(g["fc"]["kernel"], dtype=torch.float64)
    bias.grad = torch.tensor(g["fc"]["bias"], dtype=torch.float64)
    opt.step()
  np.testing.assert_allclose(p["fc"]["kernel"], kernel.detach().numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(p["fc"]["bias"], bias.detach().numpy(), rtol=1e-6, atol=1e-6)


def _run_ours(config, params, grads_seq, lrs):
  tx = optim.create_optimizer(config)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for g, lr in zip(grads_seq, lrs):
    state = optim.with_learning_rate(state, lr)
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
  return p


@pytest.mark.parametrize("name,decoupled,torch_cls", [
    ("adam", False, "Adam"), ("adam", True, "AdamW"), ("adamw", False, "AdamW")])
def test_adam_and_adamw_match_torch(name, decoupled, torch_cls):
  config = _config(optimizer=name, decoupled_weight_decay=decoupled, weight_decay=0.01,
                   adam_betas=(0.8, 0.99), adam_eps=1e-6)
  rng = np.random.default_rng(1)
  params = {"fc": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)}}
  grads_seq = [{"fc": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)}} for _ in range(5)]
  lrs = [1e-2, 1e-2, 5e-3, 5e-3, 1e-3]
  ours = _run_ours(config, params, grads_seq, lrs)
  kernel = torch.tensor(params["fc"]["kernel"], dtype=torch.float64, requires_grad=True)
  opt = getattr(torch.optim, torch_cls)([kernel], lr=1e-2, betas=(0.8, 0.99), eps=1e-6,
                                        weight_decay=0.01)
  for g, lr in zip(grads_seq, lrs):
    opt.param_groups[0]["lr"] = lr
    kernel.grad = torch.tensor(g["fc"]["kernel"], dtype=torch.float64)
    opt.step()
  np.testing.assert_allclose(ours["fc"]["kernel"], kernel.detach().numpy(), rtol=1e-5,
                             atol=1e-6)


def test_decoupled_decay_differs_from_coupled():
  params = {"w": {"kernel": jnp.ones((3,))}}
  grads = {"w": {"kernel": jnp.zeros((3,))}}
  out = {}
  for decoupled in (False, True):
    tx = optim.create_optimizer(_config(weight_decay=0.1, decoupled_weight_decay=decoupled))
    state = optim.with_learning_rate(tx.init(params), 1.0)
    p = params
    for _ in range(2):
      u, state = tx.update(grads, state, p)
      p = jax.tree.map(lambda a, b: a + b, p, u)
    out[decoupled] = float(p["w"]["kernel"][0])
  # coupled: decay enters momentum: 1 - .1 = .9; then m = .9*.1 + .09 = .18 → .72
  np.testing.assert_allclose(out[False], 0.72, rtol=1e-6)
  # decoupled: m carries no decay: 1 - .1 = .9; .9 - .09 = .81
  np.testing.assert_allclose(out[True], 0.81, rtol=1e-6)


def test_step_schedule_and_warmup():
  config = _config(lr_schedule="step", learning_rate=0.1, lr_step_epochs=(2, 4), num_epochs=6)
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10)
  np.testing.assert_allclose([fn(0), fn(19), fn(20), fn(39), fn(40)],
                             [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)
  config = _config(lr_schedule="cosine", learning_rate=0.1, warmup_epochs=1, num_epochs=3)
  fn = optim.create_learning_rate_fn(config, steps_per_epoch=10)
  np.testing.assert_allclose([fn(0), fn(5), fn(10), fn(20), fn(30)],
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)


def test_batch_scaling():
  assert optim.base_learning_rate(_config(learning_rate=0.1, batch_size=512,
                                          scale_lr_by_batch=True)) == pytest.approx(0.2)


def test_plateau_divides_by_ten_at_most_three_times_and_round_trips():
  update = jax.jit(optim.plateau_update_fn(_config(plateau_patience=2)))
  state = optim.PlateauState.initial()
  history = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
  decays = []
  for top1 in history:
    before = int(state.num_decays)
    state = update(state, top1)
    decays.append(int(state.num_decays) > before)
  assert decays == [False, False, False, True, False, False, True, False, True, False, False, False]
  assert float(state.scale) == pytest.approx(1e-3) and int(state.num_decays) == 3
  again = optim.PlateauState.from_dict(state.to_dict())
  assert again.to_dict() == state.to_dict()
  off = jax.jit(optim.plateau_update_fn(_config(lr_schedule="step")))
  state = optim.PlateauState.initial()
  for _ in range(5):
    state = off(state, 0.1)
  assert float(state.scale) == 1.0


def test_lars_first_step_is_the_trust_ratio_scaled_gradient():
  """LARS: update = -lr * eta * |w| / |g + wd w| * (g + wd w) on the first step."""
  lr, wd = 0.1, 5e-4
  tx = optim.create_optimizer(_config(optimizer="lars", weight_decay=wd))
  w = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
  g = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)
  state = optim.with_learning_rate(tx.init({"w": {"kernel": jnp.asarray(w)}}), lr)
  u, _ = tx.update({"w": {"kernel": jnp.asarray(g)}}, state, {"w": {"kernel": jnp.asarray(w)}})
  d = g + wd * w
  expected = -lr * 0.001 * np.linalg.norm(w) / np.linalg.norm(d) * d
  np.testing.assert_allclose(np.asarray(u["w"]["kernel"]), expected, rtol=1e-5)
