"""The benchmarks measure what they say.

The shared PyTorch reference (benchmarks/torch_alexnet.py) is checked against
the Flax model: equal parameter counts for every variant. The library CLI's
figures are checked against their definitions (MFU from the FLOP count and
the given peak; the pipeline's CPU-seconds per image against its own counts).
"""

import jax
import numpy as np
import pytest

from alexnet_jax import benchmark, models


@pytest.mark.parametrize("variant", ["paper", "torchvision", "seed", "small"])
def test_torch_reference_has_the_flax_parameter_count(variant):
  pytest.importorskip("torch")
  from benchmarks import torch_alexnet  # pylint: disable=g-import-not-at-top
  classes = 10 if variant == "small" else 1000
  torch_model = torch_alexnet.build(variant, classes)
  size = models.default_image_size(variant)
  flax_model = models.create_model(variant, num_classes=classes)
  params = jax.eval_shape(lambda: flax_model.init(jax.random.key(0),
                                                  np.zeros((1, size, size, 3), np.float32)))
  assert (sum(p.numel() for p in torch_model.parameters())
          == models.count_params(params["params"]))


def test_peak_table_matches_cards():
  assert benchmark.peak_bf16_flops("NVIDIA H100 80GB HBM3") == (989e12, "H100")
  assert benchmark.peak_bf16_flops("NVIDIA H100 PCIe")[0] == 756e12
  assert benchmark.peak_bf16_flops("NVIDIA H200")[0] == 989e12
  assert benchmark.peak_bf16_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
  assert benchmark.peak_bf16_flops("cpu") == (None, None)


@pytest.mark.slow
def test_gpu_smoke_computes_mfu_and_supply(capsys, prepared_digits):
  """The accelerator table end to end at toy size; MFU from the given peak."""
  out = benchmark.main(["gpu", "--smoke", "--variants=torchvision", "--batch_sizes=2",
                        "--image_size=64", "--peak_tflops=1", f"--data_dir={prepared_digits}"])
  (row,) = out["rows"]
  flops = 2 * 3 * models.forward_macs("torchvision", image_size=64) * row["images_per_sec"]
  assert row["mfu"] == pytest.approx(flops / 1e12)
  supply = out["pipeline"]
  assert supply["source"] == "prepared" and supply["step_images_per_sec"] == row["images_per_sec"]
  assert supply["host_supply_images_per_sec"] == pytest.approx(
      supply["images_per_cpu_second"] * supply["cores"])
  assert "MFU" in capsys.readouterr().out


@pytest.mark.slow
def test_pipeline_compares_jpeg_and_prepared_input(flowers):
  out = benchmark.main(["pipeline", f"--data_dir={flowers}", "--variant=small",
                        "--image_size=32", "--augmentation=paper", "--batches=2",
                        "--train_steps=1", "--rounds=1"])
  jpeg, prepared = out["hosts"]["jpeg paper"], out["hosts"]["prepared"]
  for r in (jpeg, prepared):
    assert r["images"] > 0
    assert r["cpu_seconds_per_image"] == pytest.approx(1.0 / r["images_per_cpu_second"])
  assert out["cpu_ratio"] == pytest.approx(jpeg["cpu_seconds_per_image"]
                                           / prepared["cpu_seconds_per_image"])
  e2e = out["end_to_end"]
  assert e2e["prepared_vs_fake"] == pytest.approx(e2e["prepared_images_per_sec"]
                                                  / e2e["fake_images_per_sec"])
  assert e2e["prepared_vs_resident"] == pytest.approx(e2e["prepared_images_per_sec"]
                                                      / e2e["prepared_resident_images_per_sec"])


def test_step_cli_runs():
  out = benchmark.main(["eval", "--variant=small", "--batch_size=8", "--steps=1", "--rounds=1"])
  assert out["images_per_sec"] > 0 and out["compile_s"] > 0


@pytest.mark.parametrize("config_name", ["seed", "flowers"])
def test_torch_reference_schedule_is_the_configs(config_name):
  """benchmarks/seed_recipe_torch.py, given seed_vs_torch's flags for a config, steps
  its learning rate exactly as the config's optax schedule does."""
  pytest.importorskip("torch")
  from alexnet_jax import config_lib, optim  # pylint: disable=g-import-not-at-top
  from benchmarks import seed_recipe_torch, seed_vs_torch  # pylint: disable=g-import-not-at-top
  flags = seed_vs_torch.torch_recipe_flags(config_name)
  given = dict(zip(flags[::2], flags[1::2]))
  config = config_lib.load(config_name)
  steps_per_epoch = 5  # flowers-mini: 160 photos, batch 32
  factor = seed_recipe_torch.lr_factor(given["--schedule"], steps_per_epoch,
                                       int(given["--epochs"]), float(given["--warmup_epochs"]))
  schedule = optim.create_learning_rate_fn(config, steps_per_epoch)
  total = steps_per_epoch * int(given["--epochs"])
  ours = np.array([float(schedule(s)) for s in range(total)])
  theirs = np.array([float(given["--lr"]) * factor(s) for s in range(total)])
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-10)
