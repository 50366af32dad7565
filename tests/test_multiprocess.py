"""Real multi-process jobs on localhost: jax.distributed + gloo CPU collectives.

Every child gets a bounded timeout and is killed in a `finally`, so a failing
job cannot hang the suite.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

from alexnet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.helpers import TINY, final_params, max_rel_diff, with_fault

pytestmark = pytest.mark.slow  # every test here starts training processes


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_job(workdir, num_processes, devices_per_process, *overrides, faults=None,
            timeout=240, heartbeat=5):
  """Runs main.py as `num_processes` processes; returns [(returncode, stderr)]."""
  port = _free_port()
  procs = []
  try:
    for i in range(num_processes):
      env = with_fault(dict(os.environ), (faults or {}).get(i))
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
      cmd = [sys.executable, "main.py", f"--config={TINY}", f"--workdir={workdir}", *overrides]
      if num_processes > 1:
        cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                f"--process_id={i}", f"--heartbeat_timeout_seconds={heartbeat}",
                "--initialization_timeout=120"]
      procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
      _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      results.append((p.returncode, err))
    return results
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def prepared_dirs(tmp_path_factory, flowers, tfds_data_dir):
  """The offline digits and the shipped flower photos, prepared at the tiny config's size."""
  from alexnet_jax import config_lib, prepare  # pylint: disable=g-import-not-at-top
  out = {}
  for name, overrides in [("digits", dict(dataset="sklearn_digits", tfds_data_dir=tfds_data_dir,
                                          num_classes=10)),
                          ("folder", dict(dataset="imagefolder", data_dir=str(flowers),
                                          num_classes=5))]:
    c = config_lib.load(TINY)
    c.update(overrides)
    out[name] = tmp_path_factory.mktemp(name)
    prepare.prepare(c, out[name])
  return out


@pytest.mark.parametrize("dataset", ["digits", "folder"])
def test_two_processes_match_one_process_with_four_devices(tmp_path, prepared_dirs, dataset):
  """Prepared data cropped, flipped and lit on the devices: the same global batches,
  the same augmentation and so the same params on 2 x 2 devices as on 1 x 4."""
  overrides = ["--config.num_train_steps=4", "--config.dataset=prepared",
               f"--config.data_dir={prepared_dirs[dataset]}", "--config.augmentation=paper",
               f"--config.num_classes={10 if dataset == 'digits' else 5}"]
  results = run_job(tmp_path / "two", 2, 2, *overrides)
  for rc, err in results:
    assert rc == 0, err[-3000:]
  (rc, err), = run_job(tmp_path / "one", 1, 4, *overrides)
  assert rc == 0, err[-3000:]

  step_a, params_a, _ = final_params(str(tmp_path / "two"))
  step_b, params_b, _ = final_params(str(tmp_path / "one"))
  assert step_a == step_b == 4
  assert max_rel_diff(params_a, params_b) < 1e-5
  eval_a = [r for r in workdir_lib.read_metrics(str(tmp_path / "two")) if "eval_top1" in r][-1]
  eval_b = [r for r in workdir_lib.read_metrics(str(tmp_path / "one")) if "eval_top1" in r][-1]
  assert eval_a["eval_examples"] == eval_b["eval_examples"] == (360 if dataset == "digits" else 10)
  for key in ("eval_loss", "eval_top1", "eval_top5"):
    assert eval_a[key] == pytest.approx(eval_b[key], rel=1e-5)
  # Only process 0 writes metrics: one record per eval, not two.
  assert len([r for r in workdir_lib.read_metrics(str(tmp_path / "two")) if "eval_top1" in r]) == 1


def test_a_killed_process_fails_the_job_fast_and_a_restart_resumes(tmp_path):
  workdir = tmp_path / "run"
  overrides = ["--config.num_train_steps=10"]
  start = time.monotonic()
  results = run_job(workdir, 2, 2, *overrides, faults={1: "sigkill@step:7"}, timeout=180)
  elapsed = time.monotonic() - start
  (rc0, err0), (rc1, _) = results
  assert rc1 == -9
  assert rc0 != 0, "the surviving process must not carry on alone"
  assert "another task died" in err0 or "heartbeat" in err0.lower(), err0[-3000:]
  assert elapsed < 150
  saved = final_params(str(workdir))[0]
  assert saved >= 2

  results = run_job(workdir, 2, 2, *overrides)
  for rc, err in results:
    assert rc == 0, err[-3000:]
  assert f"Resumed from step {saved}" in results[0][1]
  assert final_params(str(workdir))[0] == 10
