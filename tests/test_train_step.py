"""The sharded train/eval steps: 1 device vs 8, dropout keys, exact masked eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import evaluation, models, optim, parallel, steps
from alexnet_jax import config_lib
from tests.helpers import TinyNet, random_batch


def _config(**overrides):
  c = config_lib.base_config()
  c.image_size = 16
  c.batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 0.1
  c.lr_schedule = "constant"
  c.eval_crops = 1
  c.log_every_steps = 1
  c.update(overrides)
  return c


def _run_steps(num_devices, config, batches, model):
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  tx = optim.create_optimizer(config)
  lr_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10)
  state = steps.create_train_state(model, tx, config, mesh)
  step = steps.make_train_step(model, tx, lr_fn, config, mesh)
  window = parallel.replicate(steps.empty_window(), mesh)
  losses = []
  for b in batches:
    state, window = step(state, window, parallel.to_global(b, mesh))
    losses.append(float(window["loss_sum"] / window["count"]))  # log_every_steps=1
  return jax.device_get(state.params), losses


@pytest.mark.slow
def test_one_device_equals_eight_devices():
  """The core check of the sharded step: device count changes nothing (dropout off)."""
  assert jax.device_count() >= 8
  config = _config()
  model = TinyNet(dropout_rate=0.0)
  batches = [random_batch(16, seed=s) for s in range(3)]
  params1, losses1 = _run_steps(1, config, batches, model)
  params8, losses8 = _run_steps(8, config, batches, model)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
  # Guard against a test that passes because nothing moved.
  init = jax.device_get(models.init_params(model, config.image_size, jax.random.key(config.seed)))
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params1),
                                                         jax.tree.leaves(init)))
  assert moved > 1e-3


def test_gradient_is_the_global_mean():
  """One SGD step without momentum/decay moves params by exactly -lr × mean gradient."""
  config = _config(momentum=0.0, weight_decay=0.0)
  model = TinyNet()
  batch = random_batch(16, seed=3)
  params8, _ = _run_steps(8, config, [batch], model)
  init = models.init_params(model, config.image_size, jax.random.key(config.seed))

  def loss(p):
    x = evaluation.normalize_images(jnp.asarray(batch["image"]), config.mean_rgb, config.std_rgb)
    logits = model.apply({"params": p}, x, train=False)
    return steps.cross_entropy(logits, jnp.asarray(batch["label"])).mean()

  grads = jax.grad(loss)(init)
  expected = jax.tree.map(lambda p, g: p - config.learning_rate * g, init, grads)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params8)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_dropout_keys_differ_per_device_and_step():
  mesh = parallel.create_mesh(jax.devices()[:8])
  root = jax.random.key(0)

  def keys(step):
    f = jax.shard_map(lambda: jax.random.key_data(steps.device_dropout_key(root, step))[None],
                      mesh=mesh, in_specs=(), out_specs=P("data"), check_vma=False)
    return np.asarray(f()).reshape(8, -1)

  k0, k1 = keys(0), keys(1)
  assert len({tuple(k) for k in k0}) == 8
  assert not any((a == b).all() for a, b in zip(k0, k1))
  np.testing.assert_array_equal(keys(0), k0)  # a function of the step alone


@pytest.mark.parametrize("crops", [1, 10])
def test_eval_step_masks_padding_exactly(crops):
  config = _config(eval_crops=crops)
  model = TinyNet()
  mesh = parallel.create_mesh(jax.devices()[:8])
  params = models.init_params(model, config.image_size, jax.random.key(1))
  mask = np.arange(16) < 11
  batch = random_batch(16, seed=5, mask=mask)
  if crops == 10:
    rng = np.random.default_rng(0)
    batch["image"] = rng.integers(0, 256, (16, 10, 16, 16, 3), dtype=np.uint8)
  step = steps.make_eval_step(model, config, mesh)
  sums = jax.device_get(step(parallel.replicate(params, mesh), parallel.to_global(batch, mesh),
                             steps.eval_totals(mesh)))

  # Hand computation on the host, real examples only.
  images = batch["image"].reshape((-1, 16, 16, 3)).astype(np.float32)
  x = evaluation.normalize_images(images, config.mean_rgb, config.std_rgb)
  logits = np.asarray(model.apply({"params": params}, x, train=False), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  # The centre crop alone: crop 4 of the 10 (corners, centre, mirrors), the only crop of 1.
  center = probs.reshape(16, 10, -1)[:, 4] if crops == 10 else probs
  if crops == 10:
    probs = probs.reshape(16, 10, -1).mean(1)
  real = np.where(mask)[0]
  labels = batch["label"][real]
  p = probs[real]
  assert sums["center_top1_sum"] == (center[real].argmax(-1) == labels).sum()
  assert sums["count"] == 11
  np.testing.assert_allclose(sums["loss_sum"], -np.log(p[np.arange(11), labels]).sum(), rtol=1e-4)
  assert sums["top1_sum"] == (p.argmax(-1) == labels).sum()
  top5 = np.argsort(-p, axis=-1)[:, :5]
  assert sums["top5_sum"] == sum(l in t for l, t in zip(labels, top5))
  # The totals run through the step: a second batch adds to the first.
  replicated, placed = parallel.replicate(params, mesh), parallel.to_global(batch, mesh)
  twice = jax.device_get(step(replicated, placed, step(replicated, placed, steps.eval_totals(mesh))))
  for key, value in sums.items():
    np.testing.assert_allclose(twice[key], 2 * value, rtol=1e-6)


@pytest.mark.slow
def test_accumulated_micro_batches_equal_the_large_batch_step():
  """grad_accum_steps=4 on 2 devices (2 examples per micro-batch) against one 16-example step."""
  model = TinyNet(dropout_rate=0.0)
  batches = [random_batch(16, seed=s) for s in range(3)]
  params_big, losses_big = _run_steps(2, _config(), batches, model)
  params_acc, losses_acc = _run_steps(2, _config(grad_accum_steps=4), batches, model)
  np.testing.assert_allclose(losses_acc, losses_big, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params_big), jax.tree.leaves(params_acc)):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-7)
  with pytest.raises(ValueError, match=r"device count 8 .* times grad_accum_steps=3 = 24; e.g. 24"):
    config_lib.validate(_config(grad_accum_steps=3), num_devices=8)


def test_clipping_is_optax_clip_by_global_norm_before_the_update():
  """One SGD step with clip_grad_norm against the same gradient clipped by hand."""
  import optax  # pylint: disable=g-import-not-at-top
  config = _config(clip_grad_norm=0.05, weight_decay=0.0, momentum=0.0)
  model = TinyNet(dropout_rate=0.0)
  batch = random_batch(16, seed=3)
  params1, _ = _run_steps(1, config, [batch], model)
  # By hand: the mean-loss gradient at init, clipped, times the learning rate.
  init = models.init_params(model, config.image_size, jax.random.key(config.seed))
  x = evaluation.normalize_images(batch["image"], config.mean_rgb, config.std_rgb)

  def loss(p):
    logits = model.apply({"params": p}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  grads = jax.grad(loss)(init)
  assert float(optax.tree.norm(grads)) > 0.05  # clipping acts
  clipped, _ = optax.clip_by_global_norm(0.05).update(grads, None)
  expected = jax.tree.map(lambda p, g: p - config.learning_rate * g, init, clipped)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params1)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
