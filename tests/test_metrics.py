"""Metric writers: TensorBoard reads what we write, errors surface, TF stays unloaded."""

import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import metrics as metrics_lib
from tests.helpers import child_env
from tests.conftest import REPO_ROOT


def _read_events(logdir):
  """TensorBoard's own loader (it checks each record's CRCs) over a run's event files."""
  from tensorboard.backend.event_processing import plugin_event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = plugin_event_accumulator.EventAccumulator(str(logdir))
  accumulator.Reload()
  return accumulator


def test_tensorboard_reads_the_scalars_and_hparams_we_write(tmp_path):
  from tensorboard.plugins.hparams import metadata as hparams_metadata  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  writer = metrics_lib.AsyncWriters([metrics_lib.TensorBoardWriter(tmp_path)])
  writer.write_hparams({"learning_rate": 0.01, "variant": "paper", "lrn": True})
  written = {2: {"train_loss": 2.5, "train_top1": 0.125}, 4: {"train_loss": np.float32(1.75)},
             6: {"train_loss": 1.0 / 3.0, "eval_top1": 0.4}}
  for step, scalars in written.items():
    writer.write_scalars(step, scalars)
  writer.close()

  events = _read_events(tmp_path)
  for tag in ("train_loss", "train_top1", "eval_top1"):
    assert events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    got = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
    want = {step: float(np.float32(s[tag])) for step, s in written.items() if tag in s}
    assert got == want, tag
  start = hparams_metadata.parse_session_start_info_plugin_data(
      events.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content)
  assert start.hparams["learning_rate"].number_value == 0.01
  assert start.hparams["variant"].string_value == "paper"
  assert start.hparams["lrn"].bool_value is True


def test_a_failed_write_surfaces_at_flush(tmp_path):

  class Broken(metrics_lib.Writer):

    def write_scalars(self, step, scalars):
      raise OSError("disk gone")

  log = tmp_path / "metrics.jsonl"
  writer = metrics_lib.AsyncWriters([metrics_lib.JsonlWriter(log), Broken()])
  writer.write_scalars(1, {"loss": 1.0})
  with pytest.raises(OSError, match="disk gone"):
    writer.flush()
  assert metrics_lib.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]
  writer.close()


def test_training_and_restoring_on_fake_data_never_import_tensorflow(tmp_path):
  """Start-up stays cheap: TensorFlow (~6 s to import here) loads only for tf.data sources."""
  script = f"""
import sys
from alexnet_jax import config_lib, inference, train
c = config_lib.load("default:tiny")
train.train_and_evaluate(c, {str(tmp_path)!r})
predictor = inference.load({str(tmp_path)!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "clu"))
print("LOADED", loaded)
"""
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=child_env(2),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "LOADED []" in proc.stdout, proc.stdout[-2000:]
  assert list(tmp_path.glob("events.out.tfevents.*"))
