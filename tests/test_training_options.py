"""The modern options (EMA, accumulation, clipping, Mixup/CutMix): their references and resume.

Accumulation and clipping are checked against the large batch and optax by hand in
test_train_step.py, Mixup/CutMix against their definitions in test_device_augment.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import config_lib
from alexnet_jax import inference
from alexnet_jax import optim
from alexnet_jax import train
from alexnet_jax import workdir as workdir_lib
from tests.helpers import assert_bitwise_equal, final_params


def test_ema_is_the_hand_computed_average_of_the_updated_params():
  c = config_lib.base_config()
  c.ema_decay, c.momentum, c.weight_decay, c.learning_rate = 0.5, 0.0, 0.0, 0.1
  tx = optim.create_optimizer(c)
  params = {"w": jnp.array([1.0, -2.0])}
  state = tx.init(params)
  ema, history = np.array([1.0, -2.0]), []
  for g in ([1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]):
    updates, state = tx.update({"w": jnp.array(g)}, state, params)
    params = optax.apply_updates(params, updates)
    ema = 0.5 * ema + 0.5 * np.asarray(params["w"])  # by hand
    history.append(np.asarray(params["w"]))
    np.testing.assert_allclose(optim.ema_params(state)["w"], ema, rtol=1e-6)
  np.testing.assert_allclose(history[-1], [1.0 - 0.1 * 0.0, -2.0 - 0.1 * 3.0])
  assert optim.ema_params(optim.create_optimizer(config_lib.base_config()).init(params)) is None


def _all_options(steps):
  c = config_lib.load("default:tiny")
  c.num_train_steps = steps
  c.ema_decay, c.grad_accum_steps, c.clip_grad_norm = 0.9, 2, 0.5
  c.mixup_alpha, c.cutmix_alpha = 0.4, 1.0
  c.batch_size = 16
  return c


@pytest.mark.slow
def test_every_option_on_resumes_bitwise_and_predicts_with_the_average(tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(_all_options(4), str(straight))
  train.train_and_evaluate(_all_options(2), str(resumed))
  train.train_and_evaluate(_all_options(4), str(resumed))  # resumes from step 2
  step_a, params_a, _ = final_params(straight)
  step_b, params_b, _ = final_params(resumed)
  assert step_a == step_b == 4
  assert_bitwise_equal(params_a, params_b)
  ema_a = inference.load(str(straight), use_ema=True).params
  ema_b = inference.load(str(resumed), use_ema=True).params
  assert_bitwise_equal(jax.device_get(ema_a), jax.device_get(ema_b))
  plain = jax.device_get(inference.load(str(straight)).params)
  assert not np.array_equal(plain["conv1"]["kernel"], jax.device_get(ema_a)["conv1"]["kernel"])
  evals = [r for r in workdir_lib.read_metrics(straight) if "eval_top1" in r]
  assert evals and all("ema_eval_top1" in r and "ema_eval_loss" in r for r in evals)


def test_the_best_k_checkpoints_are_the_best_k_evals_of_the_metrics_file(tmp_path):
  c = config_lib.load("default:tiny")
  c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 6, 1, 100
  c.keep_checkpoints, c.keep_best, c.best_metric = 1, 2, "eval_loss"
  c.learning_rate = 0.05
  train.train_and_evaluate(c, str(tmp_path))
  evals = {r["step"]: r["eval_loss"] for r in workdir_lib.read_metrics(tmp_path)
           if "eval_loss" in r}
  assert len(evals) == 6 and len(set(evals.values())) == 6
  best_two = sorted(evals, key=evals.get)[:2]
  kept = sorted(int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit())
  assert kept == sorted(set(best_two) | {6})
