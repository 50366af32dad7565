"""The CPU formulations equal the plain ones: values and gradients, to 1e-5 relative.

References are independent of alexnet_jax.models.cpu_kernels: flax's `nn.max_pool`
differentiated by JAX, PyTorch's `max_pool2d` (when installed), and for the
XLA option the same convolutions compiled with XLA:CPU's defaults. Inputs are
ReLU'd and rounded so that windows tie (the case where gradient routing can
differ), and sizes are small so the file runs in seconds.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models, optim, parallel, steps
from alexnet_jax.models import cpu_kernels
from alexnet_jax import config_lib

RTOL = 1e-5


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _tied_input(shape, seed=0):
  """Non-negative small integers: many equal values inside a window (ties), many zeros."""
  rng = np.random.default_rng(seed)
  return np.maximum(np.round(rng.standard_normal(shape) * 2), 0).astype(np.float32)


# ---------------------------------------------------------------------------
# max_pool
# ---------------------------------------------------------------------------

POOL_CASES = [  # (H, W, window, strides): the variants' 3/2 and 2/2 pools, plus odd shapes
    (55, 55, (3, 3), (2, 2)),
    (27, 27, (3, 3), (2, 2)),
    (13, 13, (3, 3), (2, 2)),
    (32, 32, (3, 3), (2, 2)),
    (27, 27, (2, 2), (2, 2)),
    (13, 14, (3, 3), (2, 2)),
    (10, 9, (3, 2), (1, 3)),
    (7, 7, (2, 2), (3, 3)),
    (8, 8, (3, 3), (3, 3)),
]


@pytest.mark.parametrize("height,width,window,strides", POOL_CASES)
def test_max_pool_equals_flax_values_and_gradient(height, width, window, strides):
  x = _tied_input((2, height, width, 5))
  plain = lambda v: nn.max_pool(v, window, strides=strides, padding="VALID")
  mine = jax.jit(lambda v: cpu_kernels.max_pool(v, window, strides))
  y_ref, vjp_ref = jax.vjp(plain, x)
  y, vjp = jax.vjp(mine, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
  g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
  (dx_ref,), (dx,) = vjp_ref(g), vjp(g)
  assert _rel_err(dx, dx_ref) < RTOL
  # Each element gets at most a handful of cotangents; a wrong tie rule moves
  # whole values, far beyond rounding.
  np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-5)


def test_max_pool_gradient_is_not_trivial():
  """Guard: the tie-heavy input really has ties, and the gradient is non-zero."""
  x = _tied_input((2, 13, 13, 5))
  windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
  flat = windows.reshape(windows.shape[:4] + (9,))
  ties = (flat == flat.max(-1, keepdims=True)).sum(-1) > 1
  assert ties.mean() > 0.2
  dx = jax.grad(lambda v: cpu_kernels.max_pool(v, (3, 3), (2, 2)).sum())(x)
  assert float(jnp.abs(dx).sum()) == pytest.approx(2 * 6 * 6 * 5)  # one unit per window


def test_max_pool_matches_torch_tie_rule():
  torch = pytest.importorskip("torch")
  x = _tied_input((2, 27, 27, 4), seed=3)
  g = np.random.default_rng(4).standard_normal((2, 13, 13, 4)).astype(np.float32)
  _, vjp = jax.vjp(lambda v: cpu_kernels.max_pool(v, (3, 3), (2, 2)), x)
  tx = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_()
  ty = torch.nn.functional.max_pool2d(tx, 3, 2)
  ty.backward(torch.tensor(g).permute(0, 3, 1, 2))
  np.testing.assert_allclose(vjp(g)[0], tx.grad.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-5)


def test_max_pool_bfloat16_values():
  x = jnp.asarray(_tied_input((2, 27, 27, 3)), jnp.bfloat16)
  np.testing.assert_array_equal(
      np.asarray(cpu_kernels.max_pool(x, (3, 3), (2, 2)), np.float32),
      np.asarray(nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"), np.float32))


def test_max_pool_gradient_has_no_scatter():
  """The point of the formulation: the compiled gradient has no (select-and-)scatter."""
  x = jax.ShapeDtypeStruct((2, 27, 27, 4), jnp.float32)

  def grad_text(pool):
    return jax.jit(jax.grad(lambda v: pool(v).sum())).lower(x).as_text()

  plain = grad_text(lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding="VALID"))
  mine = grad_text(lambda v: cpu_kernels.max_pool(v, (3, 3), (2, 2)))
  assert "scatter" in plain  # JAX's own gradient scatters (select_and_scatter or scatter)
  assert "scatter" not in mine


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=np.zeros((2, 5, 5)), window=(3, 3), strides=(2, 2)), "NHWC"),
    (dict(x=np.zeros((1, 5, 5, 1)), window=(0, 3), strides=(2, 2)), ">= 1"),
    (dict(x=np.zeros((1, 2, 5, 1)), window=(3, 3), strides=(2, 2)), "smaller than the window"),
])
def test_max_pool_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    cpu_kernels.max_pool(**kwargs)


# ---------------------------------------------------------------------------
# The whole model with and without the CPU formulations
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant,size", [("seed", 67), ("paper", 67), ("small", 32)])
def test_model_cpu_kernels_equal_plain(variant, size):
  """Logits and every parameter gradient, train mode (dropout on, same key).

  Quarter width keeps compilation quick; the layer structure (strides,
  paddings, towers, LRN, pools) is the variant's.
  """
  width = 1.0 if variant == "small" else 0.25
  plain = models.create_model(variant, num_classes=7, cpu_kernels="off", width_multiplier=width)
  fast = models.create_model(variant, num_classes=7, cpu_kernels="on", width_multiplier=width)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, size, size, 3)).astype(np.float32)
  labels = jnp.asarray([1, 5])
  # Random parameters of the right shapes without compiling the initialisers
  # (XLA:CPU takes seconds to compile a dozen random-number generators).
  shapes = jax.eval_shape(plain.init, jax.random.key(0), images[:1])["params"]
  params = jax.tree.map(
      lambda s: (rng.standard_normal(s.shape) * (2.0 / np.prod(s.shape[:-1])) ** 0.5
                 ).astype(np.float32), shapes)

  def loss(model, p):
    logits = model.apply({"params": p}, images, train=True, rngs={"dropout": jax.random.key(1)})
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), logits

  (l_ref, logits_ref), g_ref = jax.jit(jax.value_and_grad(lambda p: loss(plain, p),
                                                          has_aux=True))(params)
  (l_fast, logits_fast), g_fast = jax.jit(jax.value_and_grad(lambda p: loss(fast, p),
                                                             has_aux=True))(params)
  assert _rel_err(logits_fast, logits_ref) < RTOL
  assert abs(float(l_fast) - float(l_ref)) <= RTOL * abs(float(l_ref))
  flat_ref = dict(jax.tree_util.tree_leaves_with_path(g_ref))
  flat_fast = dict(jax.tree_util.tree_leaves_with_path(g_fast))
  assert flat_ref.keys() == flat_fast.keys()
  for key, ref in flat_ref.items():
    assert float(jnp.abs(ref).max()) > 0, key  # the gradient reached this layer
    assert _rel_err(flat_fast[key], ref) < RTOL, (key, _rel_err(flat_fast[key], ref))


def test_auto_follows_the_backend(monkeypatch):
  """auto: CPU formulation on a CPU backend, the plain program elsewhere."""
  model = models.create_model("small", num_classes=3)
  assert model.cpu_kernels == "auto"
  x = jnp.zeros((1, 32, 32, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]

  def jaxpr_text():
    return str(jax.make_jaxpr(lambda p: model.apply({"params": p}, x))(params))

  assert jax.default_backend() == "cpu"
  on_cpu = jaxpr_text()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  elsewhere = jaxpr_text()
  assert "reduce_window_max" not in on_cpu and "name=_max_pool" in on_cpu
  assert "reduce_window_max" in elsewhere and "name=_max_pool" not in elsewhere


@pytest.mark.parametrize("value", ["fast", 1, ""])
def test_bad_setting_is_a_clear_error(value):
  with pytest.raises(ValueError, match="cpu_kernels"):
    models.create_model("seed", num_classes=10, cpu_kernels=value)


def test_setting_accepts_bools():
  assert models.create_model("seed", num_classes=10, cpu_kernels=True).cpu_kernels == "on"
  assert models.create_model("seed", num_classes=10, cpu_kernels=False).cpu_kernels == "off"


# ---------------------------------------------------------------------------
# The XLA option: Eigen instead of YNNPACK for convolutions
# ---------------------------------------------------------------------------

CONV_CASES = [  # (H, Cin, Cout, kernel, stride, padding, groups): the variants' convolutions
    (67, 3, 8, 11, 4, 2, 1),  # conv1 of paper/torchvision/seed
    (15, 8, 16, 5, 1, 2, 1),  # conv2 (seed, torchvision); small's convs
    (15, 8, 16, 5, 1, 2, 2),  # conv2 of paper: two towers
    (7, 16, 12, 3, 1, 1, 1),  # conv3
    (7, 16, 12, 3, 1, 1, 2),  # conv4/conv5 of paper
]


@pytest.mark.skipif(not cpu_kernels.cpu_compiler_options("cpu"),
                    reason="XLA option not verified for this jaxlib")
@pytest.mark.parametrize("height,cin,cout,kernel,stride,padding,groups", CONV_CASES)
def test_xla_option_convolutions_equal_default(height, cin, cout, kernel, stride, padding,
                                               groups):
  """Forward, input gradient and weight gradient with and without the option, and vs float64."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, height, height, cin)).astype(np.float32)
  w = rng.standard_normal((kernel, kernel, cin // groups, cout)).astype(np.float32) * 0.1

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups)

  def all_outputs(x, w):
    y, vjp = jax.vjp(conv, x, w)
    return (y,) + vjp(jnp.cos(y))

  default = jax.jit(all_outputs).lower(x, w).compile()
  eigen = jax.jit(all_outputs).lower(x, w).compile(
      compiler_options=cpu_kernels.cpu_compiler_options("cpu"))
  assert "ynn" not in eigen.as_text().lower()  # the option took the convolutions off YNNPACK
  with jax.enable_x64(True):
    exact = jax.jit(all_outputs)(x.astype(np.float64), w.astype(np.float64))
  for got, ref, truth in zip(eigen(x, w), default(x, w), exact):
    assert _rel_err(got, ref) < RTOL
    # Both are float32-accurate; the option is not the less accurate one.
    assert _rel_err(got, truth) < 1e-6 and _rel_err(ref, truth) < RTOL


def test_compiler_options_only_on_cpu_for_verified_jaxlib(monkeypatch):
  assert cpu_kernels.cpu_compiler_options("gpu") == {}
  assert cpu_kernels.compiler_options("off") == {}
  assert cpu_kernels.compiler_options("on") == cpu_kernels.cpu_compiler_options("cpu") != {}
  monkeypatch.setattr(cpu_kernels, "_jaxlib_verified", lambda version=None: False)
  assert cpu_kernels.cpu_compiler_options("cpu") == {}
  monkeypatch.undo()
  assert cpu_kernels._jaxlib_verified("0.10.2")  # pylint: disable=protected-access
  assert not cpu_kernels._jaxlib_verified("0.11.0")  # pylint: disable=protected-access
  assert not cpu_kernels._jaxlib_verified("not-a-version")  # pylint: disable=protected-access


def _convolutions_on_ynnpack(hlo_text):
  """How many convolutions sit inside YNNPACK fusions of an optimised HLO module."""
  called = set(re.findall(r"%ynn_fusion[.\w]* = .*?calls=%([\w.]+)", hlo_text))
  count, current = 0, None
  for line in hlo_text.splitlines():
    header = re.match(r"%([\w.]+) .*\{\s*$", line)
    if header and not line.startswith(" "):
      current = header.group(1)
    elif current in called and " convolution(" in line:
      count += 1
  return count


@pytest.mark.skipif(not cpu_kernels.cpu_compiler_options("cpu"),
                    reason="XLA option not verified for this jaxlib")
@pytest.mark.slow
def test_train_and_eval_steps_follow_model_cpu_kernels():
  """`model.cpu_kernels` alone decides whether the steps' convolutions leave YNNPACK."""
  config = config_lib.base_config()
  config.image_size, config.batch_size = 99, 8
  mesh = parallel.create_mesh(jax.devices()[:1])
  counts = {}
  for setting in ("on", "off"):
    model = models.create_model("seed", num_classes=10, cpu_kernels=setting)
    tx = optim.create_optimizer(config)
    lr_fn = optim.create_learning_rate_fn(config, steps_per_epoch=10)
    step = steps.make_train_step(model, tx, lr_fn, config, mesh)
    eval_step = steps.make_eval_step(model, config, mesh)
    state = steps.abstract_train_state(model, tx, config, mesh)
    compiled = step.lower(state, steps.abstract_window(mesh),
                          steps.abstract_batch(config, mesh)).compile()
    compiled_eval = eval_step.lower(state.params,
                                    steps.abstract_batch(config, mesh, eval_batch=True),
                                    steps.abstract_eval_totals(mesh)).compile()
    counts[setting] = (_convolutions_on_ynnpack(compiled.as_text()),
                       _convolutions_on_ynnpack(compiled_eval.as_text()))
  assert counts["on"] == (0, 0)
  # The check can fail: XLA's default puts the weight-gradient convolutions on YNNPACK.
  assert counts["off"][0] > 0 and counts["off"][1] > 0, counts
