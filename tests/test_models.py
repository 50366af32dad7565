"""AlexNet variants: exact sizes, shapes per layer, LRN and the paper net vs PyTorch, initialisers.

Expected numbers are computed by hand in this file (layer by layer), not read
back from the model, and the paper network is checked against a PyTorch
reference written here (grouped Conv2d, torch.nn.LocalResponseNorm).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models

# ---------------------------------------------------------------------------
# Hand-computed layer tables: (name, kernel, in_channels_per_group, out, out_hw).
# ---------------------------------------------------------------------------

CONVS = {
    "paper": [("conv1", 11, 3, 96, 55), ("conv2", 5, 48, 256, 27),
              ("conv3", 3, 256, 384, 13), ("conv4", 3, 192, 384, 13),
              ("conv5", 3, 192, 256, 13)],
    "torchvision": [("conv1", 11, 3, 64, 55), ("conv2", 5, 64, 192, 27),
                    ("conv3", 3, 192, 384, 13), ("conv4", 3, 384, 256, 13),
                    ("conv5", 3, 256, 256, 13)],
    "seed": [("conv1", 11, 3, 48, 55), ("conv2", 5, 48, 128, 27),
             ("conv3", 3, 128, 192, 13), ("conv4", 3, 192, 192, 13),
             ("conv5", 3, 192, 128, 13)],
    "small": [("conv1", 5, 3, 64, 32), ("conv2", 5, 64, 64, 15)],
}
DENSES = {  # (name, in, out) at 1000 classes
    "paper": [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)],
    "torchvision": [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)],
    "seed": [("fc6", 4608, 2048), ("fc7", 2048, 2048), ("fc8", 2048, 1000)],
    "small": [("fc3", 3136, 384), ("fc4", 384, 192), ("fc5", 192, 1000)],
}


def abstract_params(model, size):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))["params"]


def abstract_intermediates(model, size, batch=2):
  """Shapes of every module output and sown value, without computing anything."""
  params = abstract_params(model, size)

  def run(p, x):
    return model.apply({"params": p}, x, capture_intermediates=True,
                       mutable=["intermediates"])

  logits, state = jax.eval_shape(run, params, jax.ShapeDtypeStruct(
      (batch, size, size, 3), jnp.float32))
  inter = state["intermediates"]
  shapes = {}
  for name, value in inter.items():
    if name in ("__call__", "dropout"):  # dropout: shared, shape-preserving
      continue
    if isinstance(value, dict):  # a submodule: {"__call__": (out,)}
      shapes[name] = tuple(value["__call__"][0].shape)
    else:  # sown: (value,)
      shapes[name] = tuple(value[0].shape)
  return logits, shapes


@pytest.mark.parametrize("variant,expected", [
    ("paper", 60_965_224), ("torchvision", 61_100_840), ("seed", 16_630_440)])
def test_param_counts_exact(variant, expected):
  hand = sum(k * k * i * o + o for _, k, i, o, _ in CONVS[variant])
  hand += sum(i * o + o for _, i, o in DENSES[variant])
  assert hand == expected  # the table above is right
  model = models.create_model(variant, num_classes=1000)
  assert models.count_params(abstract_params(model, 224)) == expected


def test_small_param_count():
  hand = (5 * 5 * 3 * 64 + 64) + (5 * 5 * 64 * 64 + 64) + (3136 * 384 + 384)
  hand += (384 * 192 + 192) + (192 * 10 + 10)
  model = models.create_model("small", num_classes=10)
  assert models.count_params(abstract_params(model, 32)) == hand == 1_387_786


@pytest.mark.parametrize("variant", models.VARIANTS)
def test_param_shapes(variant):
  model = models.create_model(variant, num_classes=1000)
  params = abstract_params(model, models.default_image_size(variant))
  expected = {name: {"kernel": (k, k, i, o), "bias": (o,)}
              for name, k, i, o, _ in CONVS[variant]}
  expected.update({name: {"kernel": (i, o), "bias": (o,)}
                   for name, i, o in DENSES[variant]})
  got = jax.tree.map(lambda a: tuple(a.shape), params)
  assert got == expected
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))


LAYER_SHAPES = {  # output shape (without batch) of every layer at the variant's size
    "paper": {
        "conv1": (55, 55, 96), "lrn1": (55, 55, 96), "pool1": (27, 27, 96),
        "conv2": (27, 27, 256), "lrn2": (27, 27, 256), "pool2": (13, 13, 256),
        "conv3": (13, 13, 384), "conv4": (13, 13, 384), "conv5": (13, 13, 256),
        "pool5": (6, 6, 256), "flatten": (9216,), "fc6": (4096,), "fc7": (4096,),
        "fc8": (1000,)},
    "torchvision": {
        "conv1": (55, 55, 64), "pool1": (27, 27, 64), "conv2": (27, 27, 192),
        "pool2": (13, 13, 192), "conv3": (13, 13, 384), "conv4": (13, 13, 256),
        "conv5": (13, 13, 256), "pool5": (6, 6, 256), "avgpool": (6, 6, 256),
        "flatten": (9216,), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)},
    "seed": {
        "conv1": (55, 55, 48), "pool1": (27, 27, 48), "conv2": (27, 27, 128),
        "pool2": (13, 13, 128), "conv3": (13, 13, 192), "conv4": (13, 13, 192),
        "conv5": (13, 13, 128), "pool5": (6, 6, 128), "flatten": (4608,),
        "fc6": (2048,), "fc7": (2048,), "fc8": (1000,)},
    "small": {
        "conv1": (32, 32, 64), "lrn1": (32, 32, 64), "pool1": (15, 15, 64),
        "conv2": (15, 15, 64), "lrn2": (15, 15, 64), "pool2": (7, 7, 64),
        "flatten": (3136,), "fc3": (384,), "fc4": (192,), "fc5": (1000,)},
}


@pytest.mark.parametrize("variant", models.VARIANTS)
def test_shapes_through_every_layer(variant):
  model = models.create_model(variant, num_classes=1000)
  size = models.default_image_size(variant)
  logits, shapes = abstract_intermediates(model, size)
  assert shapes == {k: (2,) + v for k, v in LAYER_SHAPES[variant].items()}
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32


@pytest.mark.parametrize("variant,flatten", [
    ("paper", 9216), ("torchvision", 9216), ("seed", 4608), ("small", 4096)])
def test_non_overlapping_pool_gives_valid_fc_input(variant, flatten):
  # 2x2/2 pooling: 55->27->13->6 for the ImageNet nets, 32->16->8 for small.
  model = models.create_model(variant, num_classes=7, overlapping_pool=False)
  logits, shapes = abstract_intermediates(model, models.default_image_size(variant))
  assert shapes["flatten"] == (2, flatten)
  assert logits.shape == (2, 7)


def test_torchvision_adaptive_pool_at_other_sizes():
  # At 256 the features end at 7x7; the adaptive pool still yields 6x6 for fc6.
  model = models.create_model("torchvision", num_classes=3)
  _, shapes = abstract_intermediates(model, 256)
  assert shapes["pool5"] == (2, 7, 7, 256) and shapes["avgpool"] == (2, 6, 6, 256)


def test_too_small_images_raise():
  model = models.create_model("paper", num_classes=10)
  with pytest.raises(ValueError, match="too small"):
    abstract_intermediates(model, 32)


# ---------------------------------------------------------------------------
# MACs.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant,expected_m", [
    ("paper", 724.4), ("torchvision", 714.2), ("seed", 311.2)])
def test_forward_macs(variant, expected_m):
  hand = sum(hw * hw * o * k * k * i for _, k, i, o, hw in CONVS[variant])
  hand += sum(i * o for _, i, o in DENSES[variant])
  assert round(hand / 1e6, 1) == expected_m  # the figures DESIGN.md quotes
  assert models.forward_macs(variant) == hand


def test_forward_macs_small_and_overrides():
  hand = 32 * 32 * 64 * 75 + 15 * 15 * 64 * 1600 + 3136 * 384 + 384 * 192 + 192 * 10
  assert models.forward_macs("small", num_classes=10) == hand
  half = models.forward_macs("seed", width_multiplier=0.5)
  assert half < models.forward_macs("seed") / 3


# ---------------------------------------------------------------------------
# Local response normalisation vs torch.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size,alpha,beta,k", [
    (5, 1e-4, 0.75, 2.0), (5, 1e-2, 0.75, 2.0), (4, 1e-2, 0.6, 1.0), (3, 0.5, 0.5, 1.0)])
def test_lrn_matches_torch_forward_and_gradient(size, alpha, beta, k):
  torch = pytest.importorskip("torch")
  rng = np.random.RandomState(size)
  x = (rng.randn(2, 5, 6, 19) * 20).astype(np.float32)  # large enough to matter
  w = rng.randn(2, 5, 6, 19).astype(np.float32)
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  yt = torch.nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)(xt)
  (yt * torch.tensor(w.transpose(0, 3, 1, 2))).sum().backward()
  yt = yt.detach().numpy().transpose(0, 2, 3, 1)
  gt = xt.grad.numpy().transpose(0, 2, 3, 1)

  layer = models.LocalResponseNorm(size=size, alpha=alpha, beta=beta, k=k)
  fn = lambda v: (layer.apply({}, v) * w).sum()
  y = np.asarray(layer.apply({}, jnp.asarray(x)))
  g = np.asarray(jax.grad(fn)(jnp.asarray(x)))
  assert np.abs(y - x / k ** beta).max() > 1e-2  # the normalisation is not ~constant
  np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(g, gt, rtol=1e-4, atol=1e-6)


def test_lrn_by_hand_and_dtype():
  # One pixel, channels [1, 2, 3]: window for channel 0 is {0, 1} (n=3).
  x = jnp.array([[[[1.0, 2.0, 3.0]]]])
  layer = models.LocalResponseNorm(size=3, alpha=0.3, beta=1.0, k=1.0)
  sums = np.array([1 + 4, 1 + 4 + 9, 4 + 9])
  expected = np.array([1, 2, 3]) / (1 + 0.1 * sums)
  np.testing.assert_allclose(np.asarray(layer.apply({}, x))[0, 0, 0], expected, rtol=1e-6)
  y = models.LocalResponseNorm().apply({}, x.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16


def test_adaptive_avg_pool_matches_torch():
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).randn(2, 13, 7, 4).astype(np.float32)
  ref = torch.nn.AdaptiveAvgPool2d((6, 6))(torch.tensor(x.transpose(0, 3, 1, 2)))
  got = models.adaptive_avg_pool(jnp.asarray(x), (6, 6))
  np.testing.assert_allclose(np.asarray(got), ref.numpy().transpose(0, 2, 3, 1),
                             rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# The paper network (grouped convs, LRN) vs a PyTorch reference.
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_variant_matches_torch_grouped_reference():
  """Logits and every gradient, both sides in float64.

  In float32 a ReLU pre-activation within rounding of zero (there are ~10^5
  of them) can land on either side depending on the convolution library's
  summation order, flipping one gradient element by ~1e-2 relative: a float32
  comparison tests the libraries' rounding, not the network. In float64 the
  two agree to ~1e-12. (float32 equality of our CPU formulations with the
  plain ones is in test_cpu_kernels.py.)
  """
  torch = pytest.importorskip("torch")
  from benchmarks import torch_alexnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = torch_alexnet.build("paper", num_classes=10).double().eval()
  x = np.random.RandomState(0).randn(2, 224, 224, 3)
  labels = np.array([3, 7])
  logits_t = ref(torch.tensor(x.transpose(0, 3, 1, 2)))
  torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels)).backward()
  params = torch_alexnet.flax_params(ref, "paper")
  grads_t = torch_alexnet.flax_params(ref, "paper", grads=True)

  model = models.create_model("paper", num_classes=10, dtype="float64")

  def loss_fn(p):
    logits = model.apply({"params": p}, x, train=False)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean(), logits

  with jax.enable_x64(True):
    (_, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  assert logits.dtype == jnp.float64
  logits_t = logits_t.detach().numpy()
  assert np.abs(np.asarray(logits) - logits_t).max() <= 1e-9 * np.abs(logits_t).max()
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    gt = grads_t[path[0].key][path[1].key]
    assert g.dtype == jnp.float64
    err = np.abs(np.asarray(g) - gt).max()
    assert err <= 1e-9 * np.abs(gt).max(), (jax.tree_util.keystr(path), err)


# ---------------------------------------------------------------------------
# Initialisers.
# ---------------------------------------------------------------------------


def _assert_normal(value, std, name):
  value = np.asarray(value, np.float64)
  n = value.size
  assert abs(value.mean()) < 5 * std / np.sqrt(n) + 1e-7, (name, value.mean())
  # The sample std of n normals has relative error ~1/sqrt(2n).
  assert abs(value.std() / std - 1) < 5 / np.sqrt(2 * n) + 1e-3, (name, value.std(), std)


@pytest.fixture(scope="module")
def init_fn():
  cache = {}

  def init(variant, scheme, num_classes=100, width=1.0):
    model = models.create_model(variant, num_classes=num_classes, init=scheme,
                                width_multiplier=width)
    size = models.default_image_size(variant)
    key = (variant, scheme, width)
    if key not in cache:
      cache[key] = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3))))(
          jax.random.key(1))["params"]
    return cache[key]
  return init


@pytest.mark.slow
def test_paper_init_statistics(init_fn):
  params = init_fn("paper", "paper", width=0.5)  # half width: same rules, 4x fewer draws
  for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
    _assert_normal(params[name]["kernel"], 0.01, name)
    want = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
    np.testing.assert_array_equal(np.asarray(params[name]["bias"]), want, err_msg=name)


@pytest.mark.slow
def test_seed_init_statistics(init_fn):
  params = init_fn("seed", "seed")
  for name, k, _, o, _ in CONVS["seed"]:  # Kaiming normal, fan_out, ReLU gain
    _assert_normal(params[name]["kernel"], np.sqrt(2.0 / (o * k * k)), name)
  for name, _, _ in DENSES["seed"]:
    _assert_normal(params[name]["kernel"], 0.01, name)
  for name in params:
    np.testing.assert_array_equal(np.asarray(params[name]["bias"]), 0.0, err_msg=name)


def test_flax_init_statistics(init_fn):
  params = init_fn("small", "flax")
  fans = {name: k * k * i for name, k, i, _, _ in CONVS["small"]}
  fans.update({name: i for name, i, _ in DENSES["small"]})
  for name, fan_in in fans.items():  # LeCun normal: variance 1 / fan_in
    _assert_normal(params[name]["kernel"], np.sqrt(1.0 / fan_in), name)
    np.testing.assert_array_equal(np.asarray(params[name]["bias"]), 0.0, err_msg=name)


@pytest.mark.slow
def test_torch_init_is_pytorchs_default(init_fn):
  """torchvision's AlexNet keeps PyTorch's default: U(+-1/sqrt(fan_in)) weights and biases."""
  torch = pytest.importorskip("torch")
  params = init_fn("torchvision", "torch")
  reference = {"conv1": torch.nn.Conv2d(3, 64, 11), "conv3": torch.nn.Conv2d(192, 384, 3),
               "fc7": torch.nn.Linear(4096, 4096)}
  for name, layer in reference.items():
    fan_in = np.prod(layer.weight.shape[1:])
    for ours, theirs in ((params[name]["kernel"], layer.weight), (params[name]["bias"], layer.bias)):
      ours, theirs = np.asarray(ours), theirs.detach().numpy()
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(ours).max() <= bound * (1 + 1e-6) and np.abs(theirs).max() <= bound * (1 + 1e-6)
      # Uniform on [-b, b]: std b / sqrt(3); a sample std of n is off by ~0.45 / sqrt(n).
      rtol = 5 * 0.45 / np.sqrt(ours.size)
      np.testing.assert_allclose(ours.std(), bound / np.sqrt(3), rtol=rtol)
      np.testing.assert_allclose(theirs.std(), bound / np.sqrt(3), rtol=rtol)


@pytest.mark.slow
def test_grouped_seed_init_uses_torch_fan_out(init_fn):
  # torch's kaiming fan_out for Conv2d(groups=2) is out * k * k, not divided by groups.
  params = init_fn("paper", "seed", width=0.5)
  assert params["conv2"]["kernel"].shape == (5, 5, 24, 128)
  _assert_normal(params["conv2"]["kernel"], np.sqrt(2.0 / (128 * 25)), "conv2")


# ---------------------------------------------------------------------------
# Variant defaults, overrides and their validation.
# ---------------------------------------------------------------------------


def test_variant_defaults():
  paper = models.create_model("paper", num_classes=10)
  assert (paper.lrn, paper.initializer, paper.dropout_rate, paper.overlapping_pool,
          paper.activation) == (True, "paper", 0.5, True, "relu")
  for variant, init in (("seed", "seed"), ("torchvision", "torch")):
    m = models.create_model(variant, num_classes=10)
    assert (m.lrn, m.initializer, m.dropout_rate) == (False, init, 0.5)
  small = models.create_model("small", num_classes=10)
  assert (small.lrn, small.initializer) == (True, "flax")
  assert [models.default_image_size(v) for v in models.VARIANTS] == [224, 224, 224, 32]


def test_none_overrides_mean_variant_default():
  a = models.create_model("seed", num_classes=5, activation=None, lrn=None, init=None,
                          dropout_rate=None, overlapping_pool=None, dtype=None,
                          width_multiplier=None)
  assert a == models.create_model("seed", num_classes=5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="vgg"), "variant 'vgg'.*paper, torchvision, seed, small"),
    (dict(num_classes=0), "num_classes"),
    (dict(actvation="tanh"), r"override\(s\) \['actvation'\]"),
    (dict(activation="gelu"), "activation='gelu'.*relu, tanh"),
    (dict(init="xavier"), "init='xavier'.*paper, seed, torch, flax"),
    (dict(lrn="yes"), "lrn='yes' is not allowed: it must be True or False"),
    (dict(dropout_rate=1.0), r"dropout_rate.*\[0, 1\)"),
    (dict(width_multiplier=0), "width_multiplier"),
    (dict(dtype="int8"), "dtype='int8'.*float32"),
])
def test_bad_arguments_raise(kwargs, match):
  args = dict(variant="small", num_classes=10)
  args.update(kwargs)
  variant = args.pop("variant")
  with pytest.raises(ValueError, match=match):
    models.create_model(variant, **args)


@pytest.fixture(scope="module")
def small_batch():
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  params = jax.jit(models.create_model("small", num_classes=10).init)(
      jax.random.key(1), x)["params"]
  return x, params


@pytest.mark.parametrize("override", [
    dict(activation="tanh"), dict(activation="leaky_relu"), dict(activation="elu"),
    dict(activation="selu"), dict(lrn=False)])
@pytest.mark.slow
def test_overrides_change_the_forward_pass(small_batch, override):
  x, params = small_batch
  base = models.create_model("small", num_classes=10).apply({"params": params}, x)
  other = models.create_model("small", num_classes=10, **override).apply(
      {"params": params}, x)
  assert np.isfinite(np.asarray(other)).all()
  assert np.abs(np.asarray(base) - np.asarray(other)).max() > 1e-4


def test_width_multiplier_scales_layers():
  model = models.create_model("paper", num_classes=10, width_multiplier=0.5)
  params = abstract_params(model, 224)
  assert params["conv1"]["kernel"].shape == (11, 11, 3, 48)
  assert params["conv2"]["kernel"].shape == (5, 5, 24, 128)  # still two towers
  assert params["fc6"]["kernel"].shape == (6 * 6 * 128, 2048)
  model = models.create_model("paper", num_classes=10, width_multiplier=0.3)
  params = abstract_params(model, 224)
  assert all(params[n]["bias"].shape[0] % 2 == 0 for n in ("conv2", "conv4", "conv5"))


def test_dropout_only_in_training(small_batch):
  x, params = small_batch
  model = models.create_model("small", num_classes=10, dropout_rate=0.5)
  apply = lambda train, seed: np.asarray(model.apply(
      {"params": params}, x, train=train, rngs={"dropout": jax.random.key(seed)}))
  np.testing.assert_array_equal(apply(False, 0), apply(False, 1))
  assert np.abs(apply(True, 0) - apply(True, 1)).max() > 1e-4
  no_dropout = models.create_model("small", num_classes=10, dropout_rate=0.0)
  np.testing.assert_allclose(
      np.asarray(no_dropout.apply({"params": params}, x, train=True)), apply(False, 0),
      rtol=1e-6)


def test_bf16_compute_keeps_fp32_params(small_batch):
  x, params32 = small_batch
  assert models.create_model("small", num_classes=10, dtype="bfloat16") == (
      models.create_model("small", num_classes=10, dtype=jnp.bfloat16))
  model = models.create_model("small", num_classes=10, dtype=jnp.bfloat16)
  params = jax.eval_shape(model.init, jax.random.key(1), x)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = model.apply({"params": params32}, x)
  assert logits.dtype == jnp.float32
  ref = models.create_model("small", num_classes=10).apply({"params": params32}, x)
  err = np.abs(np.asarray(logits) - np.asarray(ref)).max()
  assert 0 < err < 0.05 * np.abs(np.asarray(ref)).max()  # bf16 really ran, and is close
