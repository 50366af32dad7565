"""Runs on cloud storage, against a real GCS server (gcp-storage-emulator on 127.0.0.1).

Every path goes through etils.epath to gcsfs, Orbax writes arrays through
TensorStore's GCS driver, TensorBoard events are uploaded whole: these tests
train, kill and resume, restore and predict in a fresh process, run and
report a sweep, read an image folder and a prepared dataset, all on gs://,
and check that nothing lands in a local folder called "gs:".
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import gcs_emulator
from tests.conftest import REPO_ROOT
from tests.helpers import assert_bitwise_equal, with_fault, write_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  emulator = gcs_emulator.Emulator(tmp_path_factory.mktemp("gcs") / "emulator.log").start()
  env = gcs_emulator.client_env(emulator.url)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield emulator
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    emulator.stop()


def _run(args, cwd, fault=None, timeout=300):
  env = with_fault(dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                        PYTHONPATH=str(REPO_ROOT)), fault)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _params(workdir):
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  predictor = inference.load(workdir)
  return predictor.step, jax.device_get(predictor.params)


TRAIN = ["-m", "alexnet_jax", "--config=default:tiny", "--config.num_train_steps=6",
         "--config.model.dropout_rate=0.5"]


@pytest.fixture(scope="module")
def straight(gcs, tmp_path_factory):
  """A finished 6-step run in the bucket (the reference of the kill test, read by predict)."""
  workdir = f"gs://{gcs.bucket}/straight"
  proc = _run([*TRAIN, f"--workdir={workdir}"], tmp_path_factory.mktemp("straight"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_train_kill_resume_on_gcs_is_bitwise_the_uninterrupted_run(gcs, straight, tmp_path):
  bucket = f"gs://{gcs.bucket}"
  proc = _run([*TRAIN, f"--workdir={bucket}/killed"], tmp_path, fault="sigkill@step:5")
  assert proc.returncode == -9
  proc = _run([*TRAIN, f"--workdir={bucket}/killed"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Step 4's checkpoint may still have been uploading at the kill: then step 2.
  assert re.search(r"Resumed from step [24] ", proc.stderr), proc.stderr[-3000:]
  (step_a, params_a), (step_b, params_b) = _params(straight), _params(f"{bucket}/killed")
  assert step_a == step_b == 6
  assert_bitwise_equal(params_a, params_b)
  objects = gcs.objects("killed/")
  for name in ("killed/config.json", "killed/metrics.jsonl", "killed/done.json"):
    assert name in objects, name
  assert any(o.startswith("killed/events.out.tfevents") for o in objects)
  assert any(o.startswith("killed/checkpoints/6/") for o in objects)
  from alexnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  steps = [r["step"] for r in workdir_lib.read_metrics(f"{bucket}/killed") if "train_loss" in r]
  assert steps == [2, 4, 6]  # resumed at 4: the file reads as one run
  assert not (tmp_path / "gs:").exists() and not (REPO_ROOT / "gs:").exists()


def test_predict_from_the_bucket_in_a_fresh_process(straight, tmp_path, flowers):
  image = sorted(flowers.glob("val/*/*.jpg"))[0]
  proc = _run(["-m", "alexnet_jax.predict", f"--workdir={straight}", "--top_k=3",
               str(image)], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == str(image) and len(lines) == 4
  probs = [float(line.split()[0]) for line in lines[1:]]
  assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
  assert "read only" not in proc.stderr


def test_sweep_and_report_on_gcs(gcs, tmp_path):
  sweep_file = tmp_path / "two.py"
  write_sweep(sweep_file, "sweep.axis('model.activation', ['relu', 'tanh'])",
              num_train_steps=2)
  workdir = f"gs://{gcs.bucket}/sweep"
  proc = _run(["-m", "alexnet_jax.sweep", f"--sweep={sweep_file}", f"--workdir={workdir}"],
              tmp_path)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  objects = gcs.objects("sweep/")
  for name in ("sweep/report.md", "sweep/sweep.json", "sweep/eval_top1.png",
               "sweep/model.activation=tanh/sweep.log",
               "sweep/model.activation=tanh/sweep_point.json",
               "sweep/model.activation=relu/done.json"):
    assert name in objects, name
  from etils import epath  # pylint: disable=g-import-not-at-top
  report = epath.Path(f"{workdir}/report.md").read_text()
  assert "| `model.activation=relu` | finished | 2 |" in report
  assert not (tmp_path / "gs:").exists()


def test_folders_and_prepared_data_on_gcs(gcs, flowers, tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from alexnet_jax import config_lib, data, prepare  # pylint: disable=g-import-not-at-top
  root = epath.Path(f"gs://{gcs.bucket}/flowers")
  for path in flowers.glob("*/*/*.jpg"):
    (root / path.relative_to(flowers).as_posix()).write_bytes(path.read_bytes())
  c = _sized(config_lib.base_config())
  c.dataset, c.data_dir = "imagefolder", str(root)
  info = data.dataset_info(c)
  assert (info.num_train_examples, info.num_eval_examples) == (15, 10)
  batch = next(data.create_train_iterator(c, process_index=0, process_count=1))
  assert batch["image"].shape == (5, 24, 24, 3)
  prepared_dir = f"gs://{gcs.bucket}/prepared"
  prepare.prepare(c, prepared_dir)
  assert "prepared/dataset.json" in gcs.objects("prepared/")
  c.dataset, c.data_dir = "prepared", prepared_dir
  local = _sized(config_lib.base_config())  # The same photos prepared on local disk.
  local.dataset, local.data_dir = "imagefolder", str(flowers)
  prepare.prepare(local, tmp_path / "p")
  got = next(data.create_eval_iterator(c, process_index=0, process_count=1))
  c.data_dir = str(tmp_path / "p")
  want = next(data.create_eval_iterator(c, process_index=0, process_count=1))
  np.testing.assert_array_equal(got["image"], want["image"])
  np.testing.assert_array_equal(got["label"], want["label"])


def _sized(c):
  c.image_size, c.resize_size, c.batch_size, c.eval_batch_size = 24, 28, 5, 5
  return c
