"""The paper's two-tower model parallelism equals the single-device network."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alexnet_jax import models, optim, parallel, steps
from alexnet_jax.models import towers
from alexnet_jax import config_lib
from tests.helpers import random_batch

SIZE = 67  # the smallest input the paper net takes: fast, and every layer still runs


def _config(**kw):
  c = config_lib.base_config()
  c.image_size = SIZE
  c.batch_size = 4
  c.learning_rate = 0.05
  c.lr_schedule = "constant"
  c.update(kw)
  return c


def _model(dropout=0.0):
  return models.create_model("paper", num_classes=10, dropout_rate=dropout)


def test_tower_lrn_equals_lrn_over_all_channels():
  mesh = parallel.create_mesh(jax.devices()[:2], model_parallel=2)
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 12)) * 30
  expected = models.local_response_norm(x)
  f = jax.shard_map(lambda v: towers.tower_lrn(v, "model"), mesh=mesh,
                    in_specs=P(None, None, None, "model"), out_specs=P(None, None, None, "model"),
                    check_vma=False)
  x = jax.device_put(x, jax.sharding.NamedSharding(mesh, P(None, None, None, "model")))
  np.testing.assert_allclose(jax.jit(f)(x), expected, rtol=1e-6)


@pytest.mark.slow
def test_tower_logits_equal_single_device():
  config = _config()
  model = _model()
  params = models.init_params(model, config.image_size, jax.random.key(0))
  images = jax.random.normal(jax.random.key(1), (4, SIZE, SIZE, 3))
  expected = model.apply({"params": params}, images, train=False)

  mesh = parallel.create_mesh(jax.devices()[:4], model_parallel=2)
  specs = towers.partition_specs(params)
  net = towers.create_tower_model(model, 2)
  f = jax.shard_map(lambda p, x: net.apply({"params": p}, x, train=False), mesh=mesh,
                    in_specs=(specs, P("data")), out_specs=P("data"), check_vma=False)
  params = jax.device_put(params, jax.tree.map(lambda sp: jax.sharding.NamedSharding(mesh, sp),
                                               specs, is_leaf=lambda x: isinstance(x, P)))
  got = jax.jit(f)(params, jax.device_put(images, parallel.data_sharded(mesh)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _train_one_step(mesh, config, model, batch):
  tx = optim.create_optimizer(config)
  lr_fn = optim.create_learning_rate_fn(config, 10)
  abstract = steps.abstract_train_state(model, tx, config, mesh)
  state = steps.create_train_state(model, tx, config, mesh)
  step = steps.make_train_step(model, tx, lr_fn, config, mesh, abstract)
  window = parallel.replicate(steps.empty_window(), mesh)
  state, window = step(state, window, parallel.to_global(batch, mesh))
  return state, jax.device_get(window)


def test_tower_training_step_equals_single_device_and_towers_live_apart():
  config = _config()
  model = _model(dropout=0.0)
  batch = random_batch(4, image_size=SIZE, seed=2)
  single, m1 = _train_one_step(parallel.create_mesh(jax.devices()[:1]), config, model, batch)
  mesh = parallel.create_mesh(jax.devices()[:4], model_parallel=2)
  tower_state, m2 = _train_one_step(mesh, config, model, batch)

  assert m2["loss_sum"] == pytest.approx(m1["loss_sum"], rel=1e-5)
  assert m2["grad_norm_sum"] == pytest.approx(m1["grad_norm_sum"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(jax.device_get(single.params)),
                  jax.tree.leaves(jax.device_get(tower_state.params))):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)

  # Each tower's half lives on the devices of its "model" index, and only there.
  kernel = tower_state.params["conv2"]["kernel"]  # (5, 5, 48, 256), split on outputs
  assert kernel.sharding.spec == P(None, None, None, "model")
  for shard in kernel.addressable_shards:
    tower = int(np.argwhere(mesh.device_ids == shard.device.id)[0][1])
    lo = tower * 128
    assert shard.index[3] == slice(lo, lo + 128)
    assert shard.data.shape == (5, 5, 48, 128)
  momentum = tower_state.opt_state.inner_state[1].trace["fc6"]["kernel"]
  assert momentum.sharding.spec == P(None, "model")
