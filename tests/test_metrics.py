"""Metric writers: TensorBoard reads what we write, errors surface, TF stays unloaded."""

import json
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import metrics as metrics_lib
from alexnet_jax import workdir as workdir_lib
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

  writer = metrics_lib.AsyncWriters([metrics_lib.JsonlWriter(tmp_path), Broken()])
  writer.write_scalars(1, {"loss": 1.0})
  with pytest.raises(OSError, match="disk gone"):
    writer.flush()
  assert workdir_lib.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]
  writer.close()


@pytest.mark.slow
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


def _wandb_records(path):
  """The protobuf records of a .wandb file: a LevelDB-style log of 32 KiB blocks after a
  7-byte header, each chunk a (crc32, length, type) header then data; FULL=1, FIRST=2,
  MIDDLE=3, LAST=4 (wandb writes it from Go now and ships no Python reader)."""
  import struct  # pylint: disable=g-import-not-at-top
  data, pos, block, pending = path.read_bytes(), 7, 32768, b""
  assert data[:4] == b":W&B", data[:8]
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    if kind == 0:
      break
    pending += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      yield pending
      pending = b""


def _wandb_history(run_dir):
  """{step: {metric: value}} read back from an offline W&B run's .wandb file."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top
  (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
  history = {}
  for data in _wandb_records(path):
    record = wandb_internal_pb2.Record()
    record.ParseFromString(data)
    if record.WhichOneof("record_type") == "history":
      items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
               for i in record.history.item}
      history[items.pop("_step")] = items
  return history


def test_every_writer_a_config_may_name_exists():
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  assert set(metrics_lib.WRITERS) == set(config_lib.WRITERS)


def test_wandb_and_mlflow_writers_log_what_metrics_jsonl_holds(tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  mlflow = pytest.importorskip("mlflow")
  from alexnet_jax import config_lib, train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
  monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store, as offline
  config = config_lib.load("default:tiny")
  config.writers = "wandb,mlflow"
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  records = workdir_lib.read_metrics(workdir)
  expected = {(r["step"], k): v for r in records for k, v in r.items()
              if k != "step" and isinstance(v, (int, float))}
  assert ("eval_top1" in {k for _, k in expected}) and len(expected) > 10
  logged = _wandb_history(workdir)
  assert {(s, k): v for s, items in logged.items() for k, v in items.items()
          if not k.startswith("_")} == pytest.approx(expected)
  client = mlflow.MlflowClient()
  (run,) = client.search_runs([client.get_experiment_by_name("alexnet_jax").experiment_id])
  assert run.data.params["model.variant"] == "small"
  got = {(m.step, key): m.value for key in {k for _, k in expected}
         for m in client.get_metric_history(run.info.run_id, key)}
  assert got == pytest.approx(expected)
  assert not (workdir / "events.out.tfevents").exists() and not list(workdir.glob("events.*"))
