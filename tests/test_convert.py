"""PyTorch -> Flax weights: logits and every gradient agree with PyTorch references.

The reference is the shared hand-written PyTorch AlexNet
(benchmarks/torch_alexnet.py: torchvision's layout and the seed's half-width
net), with PyTorch's own random init, so the test
exercises the converter's OIHW->HWIO transpose and the C,H,W -> H,W,C
permutation of fc6 (a wrong permutation still loads, but gives wrong logits).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import convert, models

torch = pytest.importorskip("torch")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def torch_model(variant, num_classes, seed=0):
  """The shared hand-written PyTorch reference (benchmarks/torch_alexnet.py), eval mode."""
  from benchmarks import torch_alexnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  return torch_alexnet.build(variant, num_classes).eval()


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("variant", ["seed", "torchvision"])
def test_logits_and_gradients_match_torch(variant):
  num_classes = 10
  ref = torch_model(variant, num_classes)
  rng = np.random.RandomState(1)
  x = rng.randn(2, 224, 224, 3).astype(np.float32)
  labels = np.array([1, 8])

  logits_t = ref(torch.tensor(x.transpose(0, 3, 1, 2)))
  torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels)).backward()
  logits_t = logits_t.detach().numpy()
  assert np.abs(logits_t).max() > 1e-3  # not a degenerate all-zero comparison

  params = convert.from_torch_state_dict(ref.state_dict(), variant)
  # The gradients go through the very mapping the weights do.
  grads_t = convert.from_torch_state_dict(
      {k: v.grad for k, v in ref.named_parameters()}, variant)
  model = models.create_model(variant, num_classes=num_classes)

  def loss_fn(p):
    logits = model.apply({"params": p}, x, train=False)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean(), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  assert rel_err(logits, logits_t) < 1e-4
  flat_t = dict(jax.tree_util.tree_flatten_with_path(grads_t)[0])
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert len(flat) == len(flat_t) == 16
  for path, g in flat:
    gt = flat_t[path]
    assert np.abs(gt).max() > 0, jax.tree_util.keystr(path)
    assert rel_err(g, gt) < 1e-4, (jax.tree_util.keystr(path), rel_err(g, gt))


def test_fc6_flatten_order_is_permuted_not_transposed():
  # A one-hot fc6 weight on PyTorch's flat index c*36 + h*6 + w must land on
  # our H, W, C index (h*6 + w)*C + c.
  state = {k: v.numpy() for k, v in torch_model("seed", 3).state_dict().items()}
  fc6 = np.zeros_like(state["classifier.1.weight"])
  c, h, w, out = 5, 2, 4, 7
  fc6[out, c * 36 + h * 6 + w] = 1.0
  state["classifier.1.weight"] = fc6
  params = convert.from_torch_state_dict(state, "seed")
  kernel = params["fc6"]["kernel"]
  assert kernel[(h * 6 + w) * 128 + c, out] == 1.0 and kernel.sum() == 1.0


def test_numpy_values_prefix_and_num_classes():
  ref = torch_model("seed", 5)
  from_torch = convert.from_torch_state_dict(ref.state_dict(), "seed")
  as_numpy = {"module." + k: v.numpy() for k, v in ref.state_dict().items()}
  from_numpy = convert.from_torch_state_dict(as_numpy, "seed", num_classes=5)
  assert from_torch["fc8"]["kernel"].shape == (2048, 5)
  jax.tree.map(np.testing.assert_array_equal, from_torch, from_numpy)
  assert all(a.dtype == np.float32 for a in jax.tree.leaves(from_numpy))
  half = {k: v.half() for k, v in ref.state_dict().items()}
  assert convert.from_torch_state_dict(half, "seed")["conv1"]["kernel"].dtype == np.float32


def test_bad_state_dict_lists_every_mismatch():
  state = dict(torch_model("seed", 10).state_dict())
  del state["features.8.bias"]
  state["features.12.weight"] = torch.zeros(3)
  state["features.3.weight"] = torch.zeros(128, 48, 3, 3)
  with pytest.raises(ValueError) as info:
    convert.from_torch_state_dict(state, "seed")
  msg = str(info.value)
  assert "3 problem(s)" in msg
  assert "missing key 'features.8.bias' (expected shape (192,))" in msg
  assert "unexpected key 'features.12.weight' (shape (3,))" in msg
  assert ("shape mismatch for 'features.3.weight': got (128, 48, 3, 3), "
          "expected (128, 48, 5, 5)") in msg


def test_wrong_variant_and_class_count():
  state = torch_model("seed", 10).state_dict()
  with pytest.raises(ValueError) as info:
    convert.from_torch_state_dict(state, "torchvision")
  assert "features.0.weight" in str(info.value) and "classifier.6.weight" in str(info.value)
  with pytest.raises(ValueError, match=r"classifier.6.bias.*got \(10,\), expected \(20,\)"):
    convert.from_torch_state_dict(state, "seed", num_classes=20)
  with pytest.raises(ValueError, match="supported: torchvision, seed"):
    convert.from_torch_state_dict(state, "paper")
  with pytest.raises(ValueError, match="Pass num_classes"):
    convert.from_torch_state_dict({}, "seed")


def test_missing_torch_gives_clear_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
  with pytest.raises(ImportError, match="pip install torch"):
    convert.load_torch_state_dict(str(tmp_path / "x.pth"))


@pytest.mark.slow
def test_cli_writes_a_loadable_checkpoint(tmp_path):
  ref = torch_model("seed", 4)
  pth = tmp_path / "seed.pth"
  torch.save({"state_dict": ref.state_dict()}, pth)  # a wrapped state dict, as trainers save
  workdir = tmp_path / "workdir"
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.convert", "--variant=seed",
       f"--torch_checkpoint={pth}", f"--workdir={workdir}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

  with open(workdir / "config.json") as f:
    config = json.load(f)
  assert config["model"]["variant"] == "seed" and config["num_classes"] == 4
  expected = convert.from_torch_state_dict(ref.state_dict(), "seed")
  # Read the params item with plain Orbax (the training loop's layout:
  # checkpoints/<step>/params), so this checks what the converter wrote.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32, sharding=sharding), expected)
  with ocp.StandardCheckpointer() as reader:
    params = reader.restore(workdir / "checkpoints" / "0" / "params", abstract)
  jax.tree.map(np.testing.assert_array_equal, params, expected)
