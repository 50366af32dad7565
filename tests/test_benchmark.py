"""The benchmarks measure what they say.

The shared PyTorch reference (benchmarks/torch_alexnet.py) is checked against
the Flax model: equal parameter counts for every variant. The library CLI's
figures are checked against their definitions (MFU from the FLOP count and
the given peak; the pipeline's CPU-seconds per image against its own counts; the
first-run script's verdict from the reader's and the step's measured rates).
"""

import json

import jax
import numpy as np
import pytest

from alexnet_jax import models
from benchmarks import throughput as benchmark


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
  peak = lambda kind: benchmark.peak_bf16_flops(kind)[0]
  assert benchmark.peak_bf16_flops("NVIDIA H100 80GB HBM3") == (989e12, "H100")
  assert peak("NVIDIA H100 PCIe") == 756e12
  assert peak("NVIDIA H100 NVL") == 835e12
  assert peak("NVIDIA H200") == peak("NVIDIA GH200 480GB") == 989e12
  assert peak("NVIDIA A100-SXM4-80GB") == peak("NVIDIA A100-PCIE-40GB") == 312e12
  assert peak("NVIDIA L4") == 121e12 and peak("NVIDIA L40S") == 362e12
  assert peak("NVIDIA A10G") == 70e12 and peak("NVIDIA A10") == 125e12
  # TPUs by the device_kind each chip reports: v5p says "TPU v5", v5e "TPU v5 lite".
  assert peak("TPU v5") == 459e12
  assert peak("TPU v5 lite") == peak("TPU v5e") == 197e12
  assert peak("TPU v4") == 275e12
  assert peak("TPU v6 lite") == 918e12
  assert benchmark.peak_bf16_flops("cpu") == (None, None)


def test_verdict_compares_measured_rates():
  assert benchmark.verdict(1000, hot=1500, cold=1200)[0]
  keeps_up, text = benchmark.verdict(1000, hot=1500, cold=400)
  assert keeps_up and "page cache only" in text and "400" in text
  keeps_up, text = benchmark.verdict(1000, hot=999, cold=None)
  assert not keeps_up and "NOT" in text
  assert benchmark.verdict(1000, hot=1000)[0]


@pytest.mark.slow
def test_gpu_runs_end_to_end_on_the_cpu(capsys, tmp_path):
  """The first-run script at toy size: its own prepared photos, the step, the reader cold
  and hot, end to end, the verdict; MFU from the given peak; JSON and markdown written."""
  out = benchmark.main(["gpu", "--smoke", "--variants=small", "--batch_sizes=4",
                        "--image_size=32", "--fp32", "--peak_tflops=1", "--workers=2",
                        f"--scratch_dir={tmp_path}", f"--out={tmp_path / 'gpu'}"])
  (row,) = out["rows"]
  flops = 2 * 3 * models.forward_macs("small", image_size=32) * row["images_per_sec"]
  assert row["mfu"] == pytest.approx(flops / 1e12) and row["compile_s"] > 0
  reader = out["reader"]
  assert reader["workers"] == 2 and reader["data_dir"] == "synthetic"
  assert reader["num_examples"] == 16 and reader["stored_size"] == 36
  assert reader["cold_images_per_sec"] > 0 and reader["hot_images_per_sec"] > 0
  e2e = out["end_to_end"]
  assert e2e["vs_step_alone"] == pytest.approx(e2e["prepared_images_per_sec"]
                                               / row["images_per_sec"])
  demand = row["images_per_sec"] * jax.local_device_count()
  assert out["verdict"]["demand_images_per_sec"] == pytest.approx(demand)
  assert (out["verdict"]["keeps_up"], out["verdict"]["text"]) == benchmark.verdict(
      demand, reader["hot_images_per_sec"], reader["cold_images_per_sec"])
  assert json.loads((tmp_path / "gpu.json").read_text())["rows"][0]["batch_size"] == 4
  report = (tmp_path / "gpu.md").read_text()
  assert "| small | 4 |" in report and "Verdict: " in report and "reader, cold" in report
  printed = capsys.readouterr().out
  assert "MFU" in printed and "CPU: " in printed and "verdict: " in printed


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
