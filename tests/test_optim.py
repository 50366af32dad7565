"""Our Optax chain against torch.optim.SGD, and the schedules against hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import optim
from configs import default

torch = pytest.importorskip("torch")


def _config(**kw):
  c = default.get_config()
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
  sched = optim.PlateauScheduler.from_config(_config(plateau_patience=2))
  history = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
  decays = [sched.update(x) for x in history]
  assert decays == [False, False, False, True, False, False, True, False, True, False, False, False]
  assert sched.scale == pytest.approx(1e-3) and sched.num_decays == 3
  again = optim.PlateauScheduler.from_config(_config(plateau_patience=2))
  again.load_state_dict(sched.state_dict())
  assert again.state_dict() == sched.state_dict()
  off = optim.PlateauScheduler.from_config(_config(lr_schedule="step"))
  assert not any(off.update(0.1) for _ in range(5)) and off.scale == 1.0


def test_lars_runs():
  tx = optim.create_optimizer(_config(optimizer="lars"))
  params = {"w": {"kernel": jnp.ones((4, 4))}}
  state = optim.with_learning_rate(tx.init(params), 0.1)
  u, _ = tx.update({"w": {"kernel": jnp.full((4, 4), 0.5)}}, state, params)
  assert np.all(np.asarray(u["w"]["kernel"]) < 0)


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="lr_schedule='linear'.*plateau"):
    optim.create_learning_rate_fn(_config(lr_schedule="linear"), 10)
