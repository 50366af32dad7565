"""Metric writers, and the arithmetic that turns (sum, count) pairs into numbers.

Steps return sums (loss, correct top-1/top-5) and counts, already added over
devices with `psum`; dividing once per logging window or eval pass keeps the
averages exact, padding included (padded examples add 0 to every sum and to
the count).

Writers: the console, TensorBoard event files and a JSONL mirror,
`WORKDIR/metrics.jsonl` (one object per write, always with "step";
`workdir` appends, reads and repairs it). Writes run on a background thread in order,
so the loop never waits for a file. Only process 0 writes files. Event files are
written without TensorFlow (docs/design.md, "TensorBoard without TensorFlow").
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import shutil
import socket
import tempfile
import time
import weakref
from typing import Any, Mapping

import jax
import numpy as np

from alexnet_jax import workdir as workdir_lib


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class Writer:
  """What the loop calls on a writer; a writer overrides what it records."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class JsonlWriter(Writer):
  """One line of WORKDIR/metrics.jsonl per `write_scalars` call (`workdir.append_metrics`):
  the machine-readable record of a run, read without TensorFlow by sweeps and notebooks."""

  def __init__(self, workdir):
    self._workdir = workdir

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    workdir_lib.append_metrics(self._workdir, record)


class ConsoleWriter(Writer):
  """One short line per write on the log: `step 120  train_loss 1.23  train_top1 0.45 ...`."""

  def write_scalars(self, step, scalars):
    parts = [f"{k} {_to_python(v):.4g}" if isinstance(_to_python(v), float)
             else f"{k} {_to_python(v)}" for k, v in sorted(scalars.items())]
    logging.info("step %d  %s", step, "  ".join(parts))


class TensorBoardWriter(Writer):
  """Scalars and hyperparameters in a TensorBoard event file, written without TensorFlow.

  Scalars are written as `tf.summary.scalar` writes them (a float32 tensor
  tagged for the scalars plugin), hyperparameters for the HParams dashboard.
  On an object store (gs://) the file is written in a local staging directory
  and uploaded whole at each flush, since objects cannot be appended to.
  """

  def __init__(self, logdir):
    # Imported here: only process 0 writes events.
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
    self._event_pb2 = event_pb2
    self._tagged = set()
    name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
            f"{os.getpid()}.v2")
    if workdir_lib.is_local(logdir):
      self._upload_to = None
      local_dir = os.fspath(logdir)
      os.makedirs(local_dir, exist_ok=True)
    else:
      self._upload_to = workdir_lib.path(logdir) / name
      local_dir = tempfile.mkdtemp(prefix="alexnet_jax_events_")
      # Removed on close, or at exit when a run ends without closing its writer.
      self._remove_staging = weakref.finalize(self, shutil.rmtree, local_dir, True)
    self._local = os.path.join(local_dir, name)
    self._uploaded_size = -1
    self._records = record_writer.RecordWriter(open(self._local, "ab"))
    self._write(summary=None, step=0, file_version="brain.Event:2")

  def _write(self, *, summary, step, **fields):
    event = self._event_pb2.Event(wall_time=time.time(), step=int(step), **fields)
    if summary is not None:
      event.summary.CopyFrom(summary)
    self._records.write(event.SerializeToString())

  def write_scalars(self, step, scalars):
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.scalar import metadata  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      entry = summary.value.add(tag=tag)
      entry.tensor.CopyFrom(tensor_util.make_tensor_proto(np.float32(value)))
      if tag not in self._tagged:  # The plugin's metadata goes with a tag's first value.
        self._tagged.add(tag)
        entry.metadata.CopyFrom(metadata.create_summary_metadata(display_name=tag,
                                                                 description=""))
    self._write(summary=summary, step=step)

  def write_hparams(self, hparams):
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=g-import-not-at-top
    self._write(summary=summary_v2.hparams_pb(dict(hparams)), step=0)

  def flush(self):
    self._records.flush()
    if self._upload_to is not None:
      size = os.path.getsize(self._local)
      if size != self._uploaded_size:
        with open(self._local, "rb") as f:
          self._upload_to.write_bytes(f.read())
        self._uploaded_size = size

  def close(self):
    self.flush()
    self._records.close()
    if self._upload_to is not None:
      self._remove_staging()


class WandbWriter(Writer):
  """Weights & Biases (`--config.writers=...,wandb`; WANDB_MODE=offline works without a login).

  The run's id is derived from the workdir, so a resumed run logs into the same W&B run.
  """

  def __init__(self, workdir, config: Mapping[str, Any]):
    import hashlib  # pylint: disable=g-import-not-at-top
    import wandb  # pylint: disable=g-import-not-at-top
    root = workdir_lib.path(workdir)
    self._run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "alexnet_jax"), name=root.name,
        id=hashlib.sha1(os.fspath(root).encode()).hexdigest()[:16], resume="allow",
        dir=os.fspath(root) if workdir_lib.is_local(root) else None, config=dict(config))

  def write_scalars(self, step, scalars):
    self._run.log({k: _to_python(v) for k, v in scalars.items()}, step=int(step))

  def close(self):
    self._run.finish()


class MlflowWriter(Writer):
  """MLflow (`--config.writers=...,mlflow`) into MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db).

  One MLflow run per workdir (found again by its tag on resume), in the experiment
  MLFLOW_EXPERIMENT_NAME (default alexnet_jax).
  """

  def __init__(self, workdir, config: Mapping[str, Any]):
    import mlflow  # pylint: disable=g-import-not-at-top
    self._entities = mlflow.entities
    self._client = mlflow.MlflowClient()
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "alexnet_jax")
    experiment = self._client.get_experiment_by_name(name)
    experiment_id = (experiment.experiment_id if experiment else
                     self._client.create_experiment(name))
    tag = os.fspath(workdir_lib.path(workdir))
    found = self._client.search_runs([experiment_id],
                                     filter_string=f"tags.workdir = '{tag}'")
    self.run_id = (found[0].info.run_id if found else self._client.create_run(
        experiment_id, run_name=workdir_lib.path(workdir).name,
        tags={"workdir": tag}).info.run_id)
    if not found:
      self._client.log_batch(self.run_id, params=[
          self._entities.Param(k, str(v)[:6000]) for k, v in config.items()])

  def write_scalars(self, step, scalars):
    now = int(time.time() * 1000)
    self._client.log_batch(self.run_id, metrics=[
        self._entities.Metric(k, float(_to_python(v)), now, int(step))
        for k, v in scalars.items()])

  def close(self):
    self._client.set_terminated(self.run_id)


# config.writers -> the writer it adds (console and metrics.jsonl are always on).
WRITERS = {"tensorboard": lambda workdir, config: TensorBoardWriter(workdir),
           "wandb": WandbWriter, "mlflow": MlflowWriter}


class AsyncWriters:
  """Sends each write to every writer on one background thread, in call order.

  The training loop never waits for a file. `flush` waits for everything
  queued and raises the first error a write hit; a failed write also surfaces
  at the next write after it.
  """

  def __init__(self, writers):
    self._writers = list(writers)
    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metric_writers")
    self._queued = collections.deque()

  def _each(self, method, *args):
    while self._queued and self._queued[0].done():
      self._queued.popleft().result()
    self._queued.append(self._thread.submit(
        lambda: [getattr(w, method)(*args) for w in self._writers]))

  def write_scalars(self, step, scalars):
    self._each("write_scalars", int(step), dict(scalars))

  def write_hparams(self, hparams):
    self._each("write_hparams", dict(hparams))

  def flush(self):
    self._each("flush")
    while self._queued:
      self._queued.popleft().result()

  def close(self):
    try:
      self.flush()
    finally:
      self._thread.submit(lambda: [w.close() for w in self._writers]).result()
      self._thread.shutdown()


def create_writer(workdir, writers: str = "tensorboard", config: Mapping[str, Any] = None):
  """Console + metrics.jsonl + the comma-separated `writers` (WRITERS) on process 0 (console
  only elsewhere), asynchronous. `config` (flat) goes to the trackers that record one."""
  if jax.process_index() != 0:
    return ConsoleWriter()
  extra = [WRITERS[name.strip()](workdir, config or {})
           for name in writers.split(",") if name.strip()]
  return AsyncWriters([ConsoleWriter(), *extra, JsonlWriter(workdir)])


def summarize_train(window: Mapping[str, Any]) -> dict[str, float]:
  """A logging window's sums (fetched) -> train_loss, train_top1, grad_norm, learning_rate."""
  count = max(float(window["count"]), 1.0)
  steps = max(float(window["num_steps"]), 1.0)
  return {"train_loss": float(window["loss_sum"]) / count,
          "train_top1": float(window["top1_sum"]) / count,
          "grad_norm": float(window["grad_norm_sum"]) / steps,
          "learning_rate": float(window["learning_rate"])}


def summarize_eval(sums: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
  """Summed eval outputs (fetched) -> eval_loss / eval_top1 / eval_top5 / eval_examples."""
  count = float(sums["count"])
  safe = max(count, 1.0)
  return {
      f"{prefix}_loss": float(sums["loss_sum"]) / safe,
      f"{prefix}_top1": float(sums["top1_sum"]) / safe,
      f"{prefix}_top5": float(sums["top5_sum"]) / safe,
      f"{prefix}_center_top1": float(sums["center_top1_sum"]) / safe,
      f"{prefix}_examples": int(round(count)),
  }
