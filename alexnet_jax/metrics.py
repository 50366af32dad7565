"""Metric writers, and the arithmetic that turns (sum, count) pairs into numbers.

Steps return sums (loss, correct top-1/top-5) and counts, already added over
devices with `psum`; dividing once per logging window or eval pass keeps the
averages exact, padding included (padded examples add 0 to every sum and to
the count).

Writers: TensorBoard event files plus a JSONL mirror, `WORKDIR/metrics.jsonl`
(one object per write, always with "step"; `workdir.read_metrics` reads it).
Writes run on a background thread in order, so the loop never waits for a
file. Only process 0 writes files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

from alexnet_jax import workdir as workdir_lib

read_metrics = workdir_lib.read_metrics


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class JsonlWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file, one line per `write_scalars` call.

  The machine-readable record of a run: sweeps and notebooks read it without
  TensorFlow. Each line is flushed at once, so a killed run keeps it.
  """

  def __init__(self, target):
    self._path = workdir_lib.path(target)
    self._lock = threading.Lock()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    line = json.dumps(record) + "\n"
    with self._lock:
      if workdir_lib.is_local(self._path):
        with open(self._path, "a") as f:  # Plain open: appends, and no path layer in between.
          f.write(line)
      else:  # Object stores cannot append: upload the whole (small) file again.
        try:
          text = self._path.read_text()
        except FileNotFoundError:
          text = ""
        self._path.write_text(text + line)

  def write_summaries(self, step, values, metadata=None):
    scalars = {k: v for k, v in values.items() if np.asarray(v).ndim == 0}
    if scalars:
      self.write_scalars(step, scalars)

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class _ConsoleWriter(JsonlWriter):
  """One short line per write on the log: `step 120  train_loss 1.23  train_top1 0.45 ...`.

  Hyperparameters go to config.json and TensorBoard, not the console.
  """

  def __init__(self):  # pylint: disable=super-init-not-called
    pass

  def write_scalars(self, step, scalars):
    parts = [f"{k} {_to_python(v):.4g}" if isinstance(_to_python(v), float)
             else f"{k} {_to_python(v)}" for k, v in sorted(scalars.items())]
    logging.info("step %d  %s", step, "  ".join(parts))


class _UploadedSummaryWriter(metric_writers.SummaryWriter):
  """TensorBoard events for an object store: written locally, uploaded whole on flush.

  TensorFlow's own GCS client cannot be pointed anywhere but Google (no
  emulator, no other credentials), so the event files are staged in a local
  directory and copied through etils.epath, like every other file of a run.
  """

  def __init__(self, target):
    self._staging = tempfile.mkdtemp(prefix="alexnet_jax_events_")
    # Removed on close, or at exit when a run ends without closing its writer.
    self._remove_staging = weakref.finalize(self, shutil.rmtree, self._staging, True)
    self._target = workdir_lib.path(target)
    self._uploaded = {}
    super().__init__(self._staging)

  def flush(self):
    super().flush()
    for name in os.listdir(self._staging):
      local = os.path.join(self._staging, name)
      size = os.path.getsize(local)
      if self._uploaded.get(name) != size:
        with open(local, "rb") as f:
          (self._target / name).write_bytes(f.read())
        self._uploaded[name] = size

  def close(self):
    self.flush()
    super().close()
    self._remove_staging()


def create_writer(workdir) -> interface.MetricWriter:
  """Console + TensorBoard + metrics.jsonl on process 0 (console only elsewhere), asynchronous."""
  if jax.process_index() != 0:
    return _ConsoleWriter()
  events = (metric_writers.SummaryWriter(os.fspath(workdir)) if workdir_lib.is_local(workdir)
            else _UploadedSummaryWriter(workdir))
  writers = [_ConsoleWriter(), events,
             JsonlWriter(workdir_lib.path(workdir) / workdir_lib.METRICS_FILE)]
  return metric_writers.AsyncWriter(metric_writers.MultiWriter(writers))


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
      f"{prefix}_examples": int(round(count)),
  }
