"""Sweeps and training under a real SLURM: Debian's slurm-wlm on this machine.

The `slurm` fixture starts slurmctld, slurmd and munged as a single node on
localhost (tests/slurm/start_slurm.sh: process tracking without cgroups,
installing the packages with apt-get when they are missing) and skips the
module, quoting the error, where that cannot work (not root, no packages and
no way to install them, daemons that do not come up). Nothing here is mocked:
jobs go through sbatch/srun/scancel and run the real CLIs.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from alexnet_jax import sweep
from alexnet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.helpers import child_env, final_params, max_rel_diff, write_sweep

SCRIPTS = REPO_ROOT / "tests" / "slurm"
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm():
  """A running single-node SLURM; skips (with the reason) where none can run."""
  if os.geteuid() != 0:
    pytest.skip("SLURM tests start slurmd, which must run as root to launch jobs; "
                "this test process is not root.")
  if not shutil.which("sbatch") and not shutil.which("apt-get"):
    pytest.skip("slurm-wlm is not installed and apt-get is not available to install it.")
  try:
    proc = subprocess.run(["bash", str(SCRIPTS / "start_slurm.sh")], capture_output=True,
                          text=True, timeout=600)
  except subprocess.TimeoutExpired:
    pytest.skip("tests/slurm/start_slurm.sh did not finish within 600 s (apt-get without a "
                "network, or daemons that never came up).")
  if proc.returncode != 0:
    pytest.skip("SLURM could not start: " + " | ".join(proc.stderr.strip().splitlines()[-6:]))
  yield


def _env(**extra):
  return child_env(1, SLURM_CONF=os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"),
                   **extra)


def _sweep(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "alexnet_jax.sweep", *args], cwd=REPO_ROOT,
                        env=_env(), capture_output=True, text=True, timeout=timeout)


def _submitted_job(stdout):
  match = re.search(r"submitted \d+ point\(s\) as SLURM job array (\d+)", stdout)
  assert match, stdout
  return match.group(1)


def _wait_until_gone(job, timeout=300):
  """Waits for every task of `job` to leave the queue; returns the seconds waited."""
  start = time.monotonic()
  while time.monotonic() - start < timeout:
    queue = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True,
                           text=True, env=_env())
    if queue.returncode == 0 and not queue.stdout.strip():
      return time.monotonic() - start
    time.sleep(1)
  subprocess.run(["scancel", job], env=_env())
  raise AssertionError(f"SLURM job {job} still queued after {timeout} s")


def _report_rows(workdir):
  report = (workdir / "report.md").read_text()
  return {m.group(1): line.split("|")[2].strip() for line in report.splitlines()
          if (m := re.match(r"\| `([^`]+)`", line))}


def test_sweep_runs_as_a_job_array_and_reports(slurm, tmp_path):
  spec = write_sweep(tmp_path / "array.py", 'sweep.axis("model.activation", ["relu", "tanh"])')
  workdir = tmp_path / "runs"
  names = ["model.activation=relu", "model.activation=tanh"]
  proc = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=slurm", "--slurm.time=10")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  job = _submitted_job(proc.stdout)
  script = next((workdir / "slurm").glob("sweep-*.sbatch")).read_text()
  assert "#SBATCH --array=0-1" in script and "#SBATCH --time=10" in script
  # The report works while the array is queued or running, marking the points so.
  early = _sweep("report", f"--workdir={workdir}")
  assert early.returncode == 0, early.stderr
  assert set(_report_rows(workdir).values()) <= {"queued", "running", "finished"}

  _wait_until_gone(job)
  for index, name in enumerate(names):
    state = sweep.read_point_state(workdir / name)
    assert state["status"] == "finished", (workdir / name / sweep.LOG_FILE).read_text()[-3000:]
    assert state["slurm_task"] == f"{job}_{index}" and state["slurm_job"]
    assert sweep.run_finished(workdir / name)
  assert _sweep("report", f"--workdir={workdir}").returncode == 0
  assert _report_rows(workdir) == {name: "finished" for name in names}
  # Resubmitting finds nothing to do.
  again = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=slurm")
  assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout


def test_cancelled_array_task_resumes_when_resubmitted(slurm, tmp_path):
  spec = write_sweep(tmp_path / "long.py", '[{"seed": 0}]', num_train_steps=400,
                     eval_every_steps=400, checkpoint_every_steps=400, log_every_steps=10)
  workdir = tmp_path / "runs"
  point = workdir / "seed=0"
  proc = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=slurm")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  job = _submitted_job(proc.stdout)
  deadline = time.monotonic() + 180
  while not [r for r in workdir_lib.read_metrics(point) if r.get("step", 0) >= 20]:
    assert time.monotonic() < deadline, "the task never reached step 20"
    time.sleep(0.5)
  subprocess.run(["scancel", f"{job}_0"], check=True, env=_env())
  _wait_until_gone(job)
  state = sweep.read_point_state(point)
  assert state["status"] == "interrupted", state
  assert not sweep.run_finished(point)
  saved, _, _ = final_params(str(point))
  assert 20 <= saved < 400  # SIGTERM from scancel: the run saved where it was

  again = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=slurm")
  assert again.returncode == 0, again.stdout + again.stderr
  _wait_until_gone(_submitted_job(again.stdout))
  state = sweep.read_point_state(point)
  assert state["status"] == "finished" and state["attempts"] == 2, state
  assert f"Resumed from step {saved}" in (point / sweep.LOG_FILE).read_text()
  steps = [r["step"] for r in workdir_lib.read_metrics(point) if "train_loss" in r]
  assert steps == sorted(set(steps)) and steps[-1] == 400  # one run, no step twice


def test_srun_two_tasks_match_one_process(slurm, tmp_path, finished_tiny_run):
  """`srun -n 2 python -m alexnet_jax --auto_distributed`: jax.distributed reads SLURM's
  environment; two one-device processes end where one process with two devices does."""
  # default:tiny, as `finished_tiny_run` (1 process, 2 devices): what is tested is SLURM's
  # environment reaching jax.distributed (the data sources' process-count invariance
  # has tests of its own).
  two = tmp_path / "srun"
  cmd = ["srun", "--ntasks=2", "--cpus-per-task=1", "--time=10", "--kill-on-bad-exit=1",
         sys.executable, "-m", "alexnet_jax", "--config=default:tiny", f"--workdir={two}",
         "--auto_distributed"]
  proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert "JAX process 0 of 2; 1 local / 2 global devices" in proc.stderr, proc.stderr[-3000:]
  step_a, params_a, _ = final_params(str(two))
  step_b, params_b, _ = final_params(str(finished_tiny_run))
  assert step_a == step_b == 4
  assert max_rel_diff(params_a, params_b) < 1e-5
