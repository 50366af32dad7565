"""The training loop end to end: main.py's entry point, metrics, resume, SIGKILL, SIGTERM.

Runs use `configs/default.py:tiny` (the `small` variant on 32×32 fake data, a
few steps) so each finishes in seconds. Subprocess runs are real processes
killed by real signals (see tests/faults.py for how the kill point is
chosen deterministically).
"""

import json
import shutil
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.helpers import TINY, final_params, run_main

REQUIRED_METRICS = {"train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5",
                    "eval_examples", "learning_rate", "images_per_sec"}

@pytest.mark.slow
def test_main_on_fake_data_writes_every_metric(finished_tiny_run):
  workdir = finished_tiny_run
  records = workdir_lib.read_metrics(str(workdir))
  assert all("step" in r for r in records)
  names = set().union(*records)
  assert REQUIRED_METRICS <= names, REQUIRED_METRICS - names
  evals = [r for r in records if "eval_top1" in r]
  assert evals[-1]["eval_examples"] == 64  # fake split size: every example scored once
  assert 0.0 <= evals[-1]["eval_top1"] <= evals[-1]["eval_top5"] <= 1.0
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["variant"] == "small" and config["dataset"] == "fake"
  assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard event file"
  step, _, meta = final_params(str(workdir))
  assert step == 4 and meta["step"] == 4


@pytest.mark.slow
def test_rerun_resumes_instead_of_restarting(finished_tiny_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_tiny_run, workdir)
  proc = run_main(workdir, "--config.num_train_steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Resumed from step 4" in proc.stderr
  steps = [r["step"] for r in workdir_lib.read_metrics(str(workdir)) if "train_loss" in r]
  assert steps == [2, 4, 6]


@pytest.mark.slow
def test_sigterm_saves_waits_and_exits_zero(tmp_path):
  workdir = tmp_path / "run"
  proc = run_main(workdir, "--config.num_train_steps=8", fault="sigterm@step:3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SIGTERM" in proc.stderr
  step, _, _ = final_params(str(workdir))
  assert step == 3
  proc = run_main(workdir, "--config.num_train_steps=8")
  assert proc.returncode == 0 and "Resumed from step 3" in proc.stderr
  assert final_params(str(workdir))[0] == 8


def test_nan_stops_with_a_message_and_keeps_last_finite_checkpoint(tmp_path, monkeypatch):
  """Step 3 gets a NaN learning rate: its update is not finite, the loop stops naming it,
  and the newest checkpoint is step 2's, all finite."""
  import jax.numpy as jnp
  from alexnet_jax import config_lib, optim, train
  real = optim.create_learning_rate_fn
  monkeypatch.setattr(optim, "create_learning_rate_fn", lambda config, steps_per_epoch: (
      lambda step: jnp.where(step == 2, jnp.nan, real(config, steps_per_epoch)(step))))
  config = config_lib.load(TINY)
  config.num_train_steps = 8
  with pytest.raises(train.NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert "Non-finite loss or gradient at step 3" in str(error.value)
  assert "learning rate" in str(error.value)
  step, params, _ = final_params(str(tmp_path))
  assert step == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_config_override_reaches_the_model_and_optimizer(monkeypatch):
  """Flag-style overrides change the module the loop builds and the optimiser it uses."""
  from absl import flags
  from ml_collections import config_flags
  from alexnet_jax import config_lib, optim
  import jax.numpy as jnp

  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
  argv = ["prog", f"--config={REPO_ROOT / 'configs/default.py'}:tiny",
          "--config.model.activation=tanh", "--config.momentum=0.5", "--config.weight_decay=0"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads overrides from sys.argv
  fv(argv)
  config = fv.config
  tanh_model = config_lib.create_model(config, 10)
  config.unlock()
  config.model.activation = "relu"
  relu_model = config_lib.create_model(config, 10)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  params = relu_model.init(jax.random.key(0), x, train=False)["params"]
  a = tanh_model.apply({"params": params}, x, train=False)
  b = relu_model.apply({"params": params}, x, train=False)
  assert not np.allclose(a, b)
  # momentum 0.5, no decay: two unit gradients move a weight by -(1) then -(1.5) × lr.
  tx = optim.create_optimizer(config)
  p = {"w": jnp.zeros(())}
  state = optim.with_learning_rate(tx.init(p), 1.0)
  u1, state = tx.update({"w": jnp.ones(())}, state, p)
  u2, _ = tx.update({"w": jnp.ones(())}, state, p)
  np.testing.assert_allclose([u1["w"], u2["w"]], [-1.0, -1.5])


@pytest.mark.slow
def test_misspelled_config_key_is_rejected(tmp_path):
  proc = run_main(tmp_path / "run", "--config.learnin_rate=0.1")
  assert proc.returncode != 0
  assert "learnin_rate" in proc.stderr


def test_main_entry_point_on_mock_imagenet(tmp_path, monkeypatch):
  """main.py's entry point (`cli.train`) with --config=configs/default.py on TFDS's mock
  imagenet2012: the real recipe's code path (paper augmentation, 10-crop eval, plateau
  schedule), tiny sizes, in this process."""
  import tensorflow_datasets as tfds
  from absl import flags
  from alexnet_jax import cli

  workdir = tmp_path / "imagenet"
  argv = ["main.py", "--config=configs/default.py", f"--workdir={workdir}",
          "--config.model.variant=small", "--config.image_size=32", "--config.resize_size=36",
          "--config.batch_size=8", "--config.eval_batch_size=8", "--config.num_train_steps=2",
          "--config.log_every_steps=1", "--config.shuffle_buffer_size=16"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads overrides from sys.argv
  monkeypatch.chdir(REPO_ROOT)
  try:
    with tfds.testing.mock_data(num_examples=20), pytest.raises(SystemExit) as exit_info:
      cli.train(argv)
  finally:
    flags.FLAGS.unparse_flags()
  assert exit_info.value.code in (None, 0)
  records = workdir_lib.read_metrics(str(workdir))
  names = set().union(*records)
  assert REQUIRED_METRICS <= names, REQUIRED_METRICS - names
  final_eval = [r for r in records if "eval_top1" in r][-1]
  assert final_eval["eval_examples"] == 20  # every mock validation example, once
  config = json.loads((workdir / "config.json").read_text())
  assert config["dataset"] == "imagenet2012" and config["eval_crops"] == 10


def test_the_train_log_writes_a_window_once_flushed_and_refuses_a_non_finite_one():
  """A queued window is written at the next flush (one step late), once; eval results
  and windows both feed the final metrics; a window with a bad step raises, naming it."""
  from alexnet_jax import metrics as metrics_lib, steps, train
  written = []

  class Recorder(metrics_lib.Writer):

    def write_scalars(self, step, scalars):
      written.append((step, dict(scalars)))

  log = train.TrainLog(Recorder(), batch_size=8)
  window = dict(steps.empty_window(), loss_sum=np.float32(6.0), count=np.float32(8.0),
                num_steps=np.float32(2.0))
  log.queue(2, window)
  assert written == []
  log.flush()
  log.flush()
  assert [s for s, _ in written] == [2]
  assert written[0][1]["train_loss"] == pytest.approx(0.75)
  assert written[0][1]["images_per_sec"] > 0
  log.write(2, {"eval_top1": 0.5})
  assert log.final["eval_top1"] == 0.5 and log.final["train_loss"] == pytest.approx(0.75)
  log.queue(4, dict(window, first_bad_step=np.int32(3)))
  with pytest.raises(train.NonFiniteLossError, match="at step 3 \\(checked at step 4\\)"):
    log.flush()
