"""Faults and bad input, each done for real: kills, corrupt files, a full disk, bad configs.

Nothing here mocks the failure: processes get real signals, checkpoint files are
really truncated or deleted, the disk really fills (a small tmpfs the test
mounts), and configs go through the same validation the CLI uses.
"""

import json
import logging
import os
import shutil
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config_lib, data
from alexnet_jax import workdir as workdir_lib
from tests.helpers import assert_bitwise_equal, final_params, run_main

def _kill_overrides(prepared_digits):
  """Prepared digits, augmented on the device, with dropout: every random stream in play."""
  return ["--config.num_train_steps=8", "--config.model.dropout_rate=0.5",
          "--config.dataset=prepared", f"--config.data_dir={prepared_digits}",
          "--config.augmentation=paper"]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, prepared_digits):
  ref = tmp_path_factory.mktemp("reference")
  proc = run_main(ref, *_kill_overrides(prepared_digits))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return ref


# Kill points: mid-run between checkpoints, and during the asynchronous write of
# the first and of a later checkpoint (the arrays are still being written).
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sigkill@step:5", "sigkill@save:2", "sigkill@save:6"])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, fault, uninterrupted_run,
                                                  prepared_digits):
  killed = tmp_path / "killed"
  proc = run_main(killed, *_kill_overrides(prepared_digits), fault=fault)
  assert proc.returncode == -signal.SIGKILL
  proc = run_main(killed, *_kill_overrides(prepared_digits))
  assert proc.returncode == 0, proc.stderr[-3000:]
  step_a, params_a, _ = final_params(str(uninterrupted_run))
  step_b, params_b, _ = final_params(str(killed))
  assert step_a == step_b == 8
  assert_bitwise_equal(params_a, params_b)


# ---------------------------------------------------------------- corrupt checkpoints


def _saved_steps(directory, steps=(1, 2, 3)):
  params = {"fc": {"kernel": jnp.arange(4096.0).reshape(64, 64), "bias": jnp.ones(64)}}
  ckpt = ckpt_lib.Checkpointer(directory, keep=5, async_save=False)
  for step in steps:
    ckpt.save(step, params=jax.tree.map(lambda x, s=step: x * s, params), meta={"n": step})
  ckpt.wait()
  ckpt.close()
  return params


def _largest_file(path):
  files = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "delete_array_file", "delete_metadata"])
def test_corrupt_newest_checkpoint_falls_back_and_keeps_files(tmp_path, damage, caplog):
  directory = str(tmp_path / "checkpoints")
  params = _saved_steps(directory)
  victim = os.path.join(directory, "3")
  if damage == "truncate":
    target = _largest_file(os.path.join(victim, "params"))
    with open(target, "r+b") as f:
      f.truncate(os.path.getsize(target) // 3)
  elif damage == "delete_array_file":
    os.remove(_largest_file(os.path.join(victim, "params")))
  else:
    os.remove(os.path.join(victim, "params", "_METADATA"))
  files_before = sorted(os.path.relpath(os.path.join(r, f), victim)
                        for r, _, fs in os.walk(victim) for f in fs)

  abstract = jax.eval_shape(lambda: params)
  ckpt = ckpt_lib.Checkpointer(directory, keep=5)
  with caplog.at_level(logging.WARNING):
    restored, _, meta = ckpt.restore_latest(abstract_params=abstract)
  assert meta["step"] == 2
  np.testing.assert_array_equal(restored["fc"]["kernel"], params["fc"]["kernel"] * 2)
  assert "step 3" in caplog.text
  # Never deleted: moved aside whole, and the good steps are untouched.
  quarantined = os.listdir(directory + "_quarantine")
  assert len(quarantined) == 1 and quarantined[0].startswith("3.")
  moved = os.path.join(directory + "_quarantine", quarantined[0])
  assert sorted(os.path.relpath(os.path.join(r, f), moved)
                for r, _, fs in os.walk(moved) for f in fs) == files_before
  assert ckpt.all_steps() == [1, 2]
  # The step number is free again: the resumed run can save step 3.
  ckpt.save(3, params=params, meta={}, force=True)
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3]


def test_checkpoint_of_another_class_count_names_the_shapes(tmp_path):
  directory = str(tmp_path / "checkpoints")
  params = _saved_steps(directory, steps=(1,))
  wrong = {"fc": {"kernel": jax.ShapeDtypeStruct((64, 10), jnp.float32),
                  "bias": jax.ShapeDtypeStruct((10,), jnp.float32)}}
  ckpt = ckpt_lib.Checkpointer(directory)
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    ckpt.restore_latest(abstract_params=wrong)
  assert "['fc']['kernel']: model expects (64, 10), checkpoint has (64, 64)" in str(e.value)
  assert "['fc']['bias']: model expects (10,), checkpoint has (64,)" in str(e.value)
  assert ckpt.all_steps() == [1]  # nothing moved or deleted
  del params


@pytest.mark.slow
def test_resuming_with_another_variant_is_a_clear_error(tmp_path, finished_tiny_run):
  workdir = tmp_path / "run"
  shutil.copytree(finished_tiny_run, workdir)
  proc = run_main(workdir, "--config.num_train_steps=6", "--config.num_classes=5",
                  "--config.allow_config_change=True")
  assert proc.returncode != 0
  assert "does not fit this model" in proc.stderr
  assert "['fc5']['kernel']: model expects (192, 5), checkpoint has (192, 10)" in proc.stderr
  assert final_params(str(workdir))[0] == 4


# ---------------------------------------------------------------- full disk


@pytest.fixture
def small_tmpfs(tmp_path):
  mount_point = tmp_path / "small_fs"
  mount_point.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=14m", "tmpfs", str(mount_point)],
                        capture_output=True, text=True)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
  yield mount_point
  subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_disk_full_while_saving_reports_and_keeps_earlier_checkpoints(small_tmpfs):
  # The tiny run's checkpoints are ~11 MB each: step 2 fits, step 4 does not.
  workdir = small_tmpfs / "run"
  proc = run_main(workdir, "--config.num_train_steps=8")
  assert proc.returncode != 0
  assert "Saving step 4" in proc.stderr and "failed" in proc.stderr
  assert "Complete earlier checkpoints: [2]" in proc.stderr
  assert "MiB free" in proc.stderr
  step, params, _ = final_params(str(workdir))
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


# ---------------------------------------------------------------- bad config


def _tiny(**overrides):
  c = config_lib.load("default:tiny")
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.mark.parametrize("key,value,expected", [
    ("model.variant", "vgg", "model.variant='vgg'.*paper"),
    ("augmentation", "autoaugment", "augmentation='autoaugment'.*inception"),
    ("lr_schedule", "linear", "lr_schedule='linear'.*plateau"),
    ("learning_rate", -0.1, "learning_rate=-0.1.*> 0"),
    ("learning_rate", 0.0, "learning_rate=0.0.*> 0"),
    ("batch_size", 0, "batch_size=0.*>= 1"),
    ("batch_size", 12, "batch_size=12.*multiple of the data-parallel device count 8"),
    ("eval_crops", 5, "eval_crops=5.*choose one of 1, 10"),
    ("model.dropout_rate", 1.5, r"dropout_rate=1.5.*in \[0, 1\)"),
    ("optimizer", "rmsprop", "optimizer='rmsprop'.*adamw"),
    ("inception_area_range", (0.5, 0.1), "inception_area_range.*0 < min <= max <= 1"),
    ("image_size", 40, "resize_size=36.*>= image_size \\(40\\)"),
    ("eval_resize", "crop", "eval_resize='crop'.*stretch"),
    ("half_precision", "yes", "half_precision='yes'.*'auto', True, False"),
    ("model.init", "xavier", "model.init='xavier'.*torch"),
    ("log_every_steps", 0, "log_every_steps=0.*>= 1"),
    ("checkpoint_every_steps", 0, "checkpoint_every_steps=0.*>= 1"),
])
def test_bad_config_values_are_named_before_compiling(key, value, expected):
  with pytest.raises(ValueError, match=expected):
    config_lib.validate(_tiny(**{key: value}), num_devices=8)


def test_unknown_dataset_is_named():
  with pytest.raises(ValueError, match="config.dataset='imagenet2013'"):
    data.dataset_info(_tiny(dataset="imagenet2013"))


@pytest.mark.slow
def test_bad_config_fails_in_the_cli_before_compilation(tmp_path):
  proc = run_main(tmp_path / "run", "--config.eval_crops=3")
  assert proc.returncode != 0
  assert "config.eval_crops=3" in proc.stderr
  assert "Compiled" not in proc.stderr


# ---------------------------------------------------------------- workdir


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(PermissionError, match="not writable"):
    workdir_lib.make_writable(str(blocker / "run"))


def test_workdir_with_another_runs_config_is_refused(tmp_path):
  workdir = str(tmp_path)
  config = _tiny()
  workdir_lib.check_resumable(workdir, config)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config_lib.to_dict(config), f)
  workdir_lib.check_resumable(workdir, _tiny(num_train_steps=100, log_every_steps=7))  # resumable keys
  with pytest.raises(workdir_lib.WorkdirError, match=r"learning_rate: 0.01 in the workdir, 0.5 now"):
    workdir_lib.check_resumable(workdir, _tiny(learning_rate=0.5))
  workdir_lib.check_resumable(workdir, _tiny(learning_rate=0.5, allow_config_change=True))
