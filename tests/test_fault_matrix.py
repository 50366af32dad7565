"""The fault matrix: every way a second round of probes found to lose or muddle a run.

One case per row of docs/reliability.md's fault matrix. Each case damages or
disturbs a real run (real files, real mounts; real processes and signals where
the subject is a process: `test_fault`; else in this process:
`test_fault_in_process`) and asserts two things: what the user is told, and
that nothing already on disk was lost. Cases that need a finished run start from a
copy of one trained once per session (`finished_tiny_run`: `default:tiny`, 4
steps, checkpoints at steps 2 and 4).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from alexnet_jax import workdir as workdir_lib
from tests.conftest import FLOWERS, REPO_ROOT
from tests.helpers import child_env, final_params, run_main

TRAINED_STEPS = [2, 4]


@pytest.fixture
def run_copy(finished_tiny_run, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(finished_tiny_run, target)
  return target


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def _no_leftovers(workdir):
  leftovers = [d for d in os.listdir(workdir / "checkpoints") if "tmp" in d]
  assert not leftovers, leftovers


def _cli(module, *args, timeout=300, devices=1):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                        env=child_env(devices), capture_output=True, text=True, timeout=timeout)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _mount_tmpfs(where, *options):
  where.mkdir(parents=True, exist_ok=True)
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


# ----------------------------------------------------------------------------- cases


def second_run_on_a_locked_workdir(run_copy, tmp_path):
  holder = subprocess.Popen(["sleep", "120"])
  try:
    (run_copy / workdir_lib.LOCK_FILE).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": holder.pid, "since": time.time(),
         "command": "training small"}))
    start = time.monotonic()
    proc = run_main(run_copy, "--config.num_train_steps=6")
    assert proc.returncode != 0
    assert f"in use by process {holder.pid} on this host" in proc.stderr, proc.stderr[-2000:]
    assert "Compiled" not in proc.stderr and time.monotonic() - start < 120
    assert _steps(run_copy) == TRAINED_STEPS
  finally:
    holder.kill()
    holder.wait()
  # The holder is gone: its stale lock is taken over and the run goes on.
  proc = run_main(run_copy, "--config.num_train_steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Taking over the lock" in proc.stderr
  assert not (run_copy / workdir_lib.LOCK_FILE).exists()


def ctrl_c_saves_and_exits(run_copy, tmp_path):
  workdir = tmp_path / "fresh"
  proc = run_main(workdir, "--config.num_train_steps=8", fault="sigint@step:3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Saved step 3 after SIGINT" in proc.stderr
  assert final_params(str(workdir))[0] == 3
  _no_leftovers(workdir)
  proc = run_main(workdir, "--config.num_train_steps=8")
  assert proc.returncode == 0 and "Resumed from step 3" in proc.stderr, proc.stderr[-3000:]


def kill_then_resume_reads_as_one_run(run_copy, tmp_path):
  workdir = tmp_path / "fresh"
  args = ["--config.num_train_steps=6", "--config.log_every_steps=1"]
  proc = run_main(workdir, *args, fault="sigkill@step:4")
  assert proc.returncode == -9
  proc = run_main(workdir, *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  train = [r["step"] for r in workdir_lib.read_metrics(workdir) if "train_loss" in r]
  assert train == [1, 2, 3, 4, 5, 6]  # no step twice, none going backwards
  evals = [r["step"] for r in workdir_lib.read_metrics(workdir) if "eval_loss" in r]
  assert evals == sorted(set(evals))


def peer_never_joins(run_copy, tmp_path):
  port = _free_port()
  start = time.monotonic()
  proc = run_main(tmp_path / "job", f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", "--process_id=0", "--initialization_timeout=5")
  assert proc.returncode != 0 and time.monotonic() - start < 60
  assert f"did not all meet at 127.0.0.1:{port} within 5 s" in proc.stderr, proc.stderr[-2000:]


def busy_coordinator_port(run_copy, tmp_path):
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = run_main(tmp_path / "job", f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2", "--process_id=0", "--initialization_timeout=5")
  assert proc.returncode != 0
  assert f"Port {port}" in proc.stderr and "already in use" in proc.stderr, proc.stderr[-2000:]


def convert_random_bytes(run_copy, tmp_path):
  pytest.importorskip("torch")
  junk = tmp_path / "junk.pth"
  junk.write_bytes(np.random.default_rng(0).bytes(4096))
  proc = _cli("alexnet_jax.convert", "--variant=torchvision", f"--torch_checkpoint={junk}",
              f"--workdir={tmp_path / 'converted'}")
  assert proc.returncode != 0
  assert "is not a PyTorch state dict that loads safely" in proc.stderr, proc.stderr[-2000:]
  assert "weights_only=False" not in proc.stderr.replace("weights_only=True", "")
  assert not (tmp_path / "converted" / "checkpoints").exists()


def predict_batch_size_zero(run_copy, tmp_path):
  image = next((FLOWERS / "val").glob("*/*.jpg"))
  proc = _cli("alexnet_jax.predict", f"--workdir={run_copy}", "--batch_size=0", str(image))
  assert proc.returncode != 0
  assert "--batch_size=0 must be >= 1" in proc.stderr and "Traceback" not in proc.stderr


CASES = [second_run_on_a_locked_workdir, ctrl_c_saves_and_exits,
         kill_then_resume_reads_as_one_run, peer_never_joins, busy_coordinator_port,
         convert_random_bytes, predict_batch_size_zero]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_fault(case, run_copy, tmp_path):
  case(run_copy, tmp_path)


# ------------------------------------------------- cases whose subject is not a process
# They call the library in this process: what a command would print is the first
# line of the error raised here (cli and predict print exactly that).


def _tiny(**overrides):
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load("default:tiny")
  for key, value in overrides.items():
    config[key] = value
  return config


def _train(workdir, **overrides):
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  return train.train_and_evaluate(_tiny(**overrides), str(workdir))


def _refused(workdir, match, **overrides):
  """Training is refused with `match` in the message, before anything compiles."""
  from alexnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  with pytest.raises((ValueError, PermissionError, workdir_lib.WorkdirError,
                      checkpoint.CheckpointError)) as error:
    _train(workdir, **overrides)
  assert match in str(error.value), str(error.value)


def convert_into_training_workdir(run_copy, tmp_path, caplog):
  from alexnet_jax import checkpoint, convert  # pylint: disable=g-import-not-at-top
  config_before = (run_copy / "config.json").read_bytes()
  with pytest.raises(checkpoint.CheckpointError, match="already holds a run"):
    convert.save_pretrained(run_copy, _tiny(), {})
  assert _steps(run_copy) == TRAINED_STEPS  # retention deleted nothing
  assert (run_copy / "config.json").read_bytes() == config_before


def torn_metrics_line(run_copy, tmp_path, caplog):
  with open(run_copy / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "train_lo')  # killed mid-write
  _train(run_copy, num_train_steps=6)
  lines = (run_copy / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]  # every line parses
  train = [r["step"] for r in records if "train_loss" in r]
  assert train == [2, 4, 6]
  assert _steps(run_copy)[-1] == 6


def fewer_steps_on_a_finished_run(run_copy, tmp_path, caplog):
  done_before = json.loads((run_copy / "done.json").read_text())
  assert _train(run_copy, num_train_steps=2)["already_finished"]
  assert "past num_train_steps=2" in caplog.text
  assert json.loads((run_copy / "done.json").read_text()) == done_before
  assert done_before["metrics"]["eval_top1"] >= 0  # done.json keeps its metrics
  assert _steps(run_copy) == TRAINED_STEPS


def rerun_of_a_finished_run(run_copy, tmp_path, caplog):
  assert _train(run_copy)["already_finished"]
  assert "already finished at step 4: {" in caplog.text, caplog.text[-2000:]
  assert "Compiled" not in caplog.text
  assert _steps(run_copy) == TRAINED_STEPS


def zero_intervals(run_copy, tmp_path, caplog):
  for key in ("log_every_steps", "checkpoint_every_steps"):
    _refused(tmp_path / key, f"config.{key}=0 is not allowed: it must be an integer >= 1",
             **{key: 0})
  assert "Compiled" not in caplog.text


def read_only_checkpoints(run_copy, tmp_path, caplog):
  workdir = tmp_path / "ro"
  _mount_tmpfs(workdir / "checkpoints", "ro", "size=1m")
  try:
    _refused(workdir, "not writable (Read-only file system, errno 30)")
    assert "Compiled" not in caplog.text
  finally:
    subprocess.run(["umount", "-l", str(workdir / "checkpoints")], check=False)


def no_room_for_one_checkpoint(run_copy, tmp_path, caplog):
  workdir = tmp_path / "small"
  _mount_tmpfs(workdir, "size=1m")
  try:
    _refused(workdir, "MiB free, but one checkpoint of this run needs about")
    assert "Compiled" not in caplog.text
  finally:
    subprocess.run(["umount", "-l", str(workdir)], check=False)


def corrupt_config_json(run_copy, tmp_path, caplog):
  (run_copy / "config.json").write_text('{"model": {"variant": "sm')
  _refused(run_copy, f"{run_copy / 'config.json'}", num_train_steps=6)
  _refused(run_copy, "Move the file aside", num_train_steps=6)
  assert _steps(run_copy) == TRAINED_STEPS


def damaged_newest_checkpoint_for_predict(run_copy, tmp_path, caplog):
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  params_dir = run_copy / "checkpoints" / "4" / "params"
  largest = max((os.path.join(r, f) for r, _, fs in os.walk(params_dir) for f in fs),
                key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 3)
  predictor = inference.load(run_copy)
  assert predictor.step == 2
  assert predictor.predict([next((FLOWERS / "val").glob("*/*.jpg")).read_bytes()]).shape == (1, 10)
  assert "Using checkpoint step 2: the newer step(s) [4] are unreadable" in caplog.text
  assert os.path.getsize(largest) > 0  # the damaged step is left for a person to look at


IN_PROCESS = [convert_into_training_workdir, torn_metrics_line, fewer_steps_on_a_finished_run,
              rerun_of_a_finished_run, zero_intervals, read_only_checkpoints,
              no_room_for_one_checkpoint, corrupt_config_json,
              damaged_newest_checkpoint_for_predict]


@pytest.mark.slow
@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.__name__ for c in IN_PROCESS])
def test_fault_in_process(case, run_copy, tmp_path, caplog):
  caplog.set_level("INFO")
  case(run_copy, tmp_path, caplog)
