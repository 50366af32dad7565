"""The benchmark measures what it says: the same network in PyTorch, and a CLI that runs.

The PyTorch side is checked against the Flax model independently: equal
parameter counts for every variant, and for `seed` equal logits once the
PyTorch weights go through `convert.from_torch_state_dict` (which has its own
tests against hand-permuted weights). The CLI runs at toy sizes.
"""

import jax
import numpy as np
import pytest

from alexnet_jax import benchmark, models


@pytest.mark.parametrize("variant", ["paper", "torchvision", "seed", "small"])
def test_torch_model_has_the_flax_parameter_count(variant):
  pytest.importorskip("torch")
  classes = 10 if variant == "small" else 1000
  torch_model = benchmark.build_torch_model(variant, classes)
  size = models.default_image_size(variant)
  flax_model = models.create_model(variant, num_classes=classes)
  params = jax.eval_shape(lambda: flax_model.init(jax.random.key(0),
                                                  np.zeros((1, size, size, 3), np.float32)))
  assert (sum(p.numel() for p in torch_model.parameters())
          == models.count_params(params["params"]))


def test_torch_seed_model_gives_the_flax_logits():
  torch = pytest.importorskip("torch")
  from alexnet_jax import convert  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = benchmark.build_torch_model("seed", 10).eval()
  params = convert.from_torch_state_dict(net.state_dict(), "seed", num_classes=10)
  images = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.tensor(images).permute(0, 3, 1, 2)).numpy()
  model = models.create_model("seed", num_classes=10)
  got = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_peak_table_matches_cards():
  assert benchmark.peak_bf16_flops("NVIDIA H100 80GB HBM3") == (989e12, "H100")
  assert benchmark.peak_bf16_flops("NVIDIA H100 PCIe")[0] == 756e12
  assert benchmark.peak_bf16_flops("NVIDIA H200")[0] == 989e12
  assert benchmark.peak_bf16_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
  assert benchmark.peak_bf16_flops("cpu") == (None, None)


def test_train_cli_reports_both_frameworks(capsys):
  pytest.importorskip("torch")
  out = benchmark.main(["train", "--variant=small", "--batch_size=8", "--steps=1",
                        "--rounds=2"])
  assert out["jax_images_per_sec"] > 0 and out["torch_images_per_sec"] > 0
  assert out["ratio"] == pytest.approx(out["jax_images_per_sec"] / out["torch_images_per_sec"])
  assert out["compile_s"] > 0
  text = capsys.readouterr().out
  assert "JAX / PyTorch speed" in text and "images/s" in text


def test_eval_cli_without_torch(capsys):
  out = benchmark.main(["eval", "--variant=small", "--batch_size=8", "--steps=1", "--rounds=1",
                        "--no_torch"])
  assert out["jax_images_per_sec"] > 0 and "ratio" not in out
  assert "PyTorch" not in capsys.readouterr().out


def test_gpu_smoke_runs_and_computes_mfu(capsys):
  """The accelerator table end to end at toy size; MFU from the given peak."""
  out = benchmark.main(["gpu", "--smoke", "--variants=torchvision", "--batch_sizes=2",
                        "--image_size=64", "--peak_tflops=1", "--pipeline_seconds=0"])
  (row,) = out["rows"]
  flops = 2 * 3 * models.forward_macs("torchvision", image_size=64) * row["images_per_sec"]
  assert row["mfu"] == pytest.approx(flops / 1e12)
  assert "MFU" in capsys.readouterr().out
