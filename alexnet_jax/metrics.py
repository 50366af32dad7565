"""Metric writers and the arithmetic that turns (sum, count) pairs into numbers.

Steps return sums (loss, correct top-1/top-5) and counts, already summed over
devices with `psum`. Summing again over a logging window or a whole eval pass
and dividing once keeps the averages exact, padding included (padded examples
contribute 0 to every sum and to the count).

Writers: clu's default writer (console log + TensorBoard) plus a JSONL mirror,
`workdir/metrics.jsonl`, one object per write, always with `"step"`. Only
process 0 writes files; other processes log to their console only.
"""

from __future__ import annotations

import json
import math
import os
import threading
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

METRICS_FILE = "metrics.jsonl"


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class JsonlWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file, one line per `write_scalars` call.

  The file is the machine-readable record of a run: sweeps and notebooks read
  it without TensorFlow. Lines are flushed at once so a killed run keeps them.
  """

  def __init__(self, path: str):
    self._path = path
    self._lock = threading.Lock()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    with self._lock, open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")

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


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """Console + TensorBoard + metrics.jsonl on process 0; console only elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  default = metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([default, JsonlWriter(os.path.join(workdir, METRICS_FILE))])


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of `workdir/metrics.jsonl` (an empty list when there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def sum_trees(trees: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Adds per-step metric dicts leaf by leaf on the host (one device fetch)."""
  fetched = jax.device_get(list(trees))
  out: dict[str, float] = {}
  for tree in fetched:
    for k, v in tree.items():
      out[k] = out.get(k, 0.0) + float(np.asarray(v, dtype=np.float64))
  return out


def summarize_train(window: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Averages a logging window of train-step outputs into train_loss / train_top1."""
  sums = sum_trees(window)
  count = max(sums.get("count", 0.0), 1.0)
  out = {"train_loss": sums["loss_sum"] / count, "train_top1": sums["top1_sum"] / count}
  if "grad_norm" in sums:
    out["grad_norm"] = sums["grad_norm"] / len(window)
  return out


def summarize_eval(sums: Mapping[str, float], prefix: str = "eval") -> dict[str, float]:
  """Turns summed eval outputs into eval_loss / eval_top1 / eval_top5 / eval_examples."""
  count = sums["count"]
  safe = max(count, 1.0)
  return {
      f"{prefix}_loss": sums["loss_sum"] / safe,
      f"{prefix}_top1": sums["top1_sum"] / safe,
      f"{prefix}_top5": sums["top5_sum"] / safe,
      f"{prefix}_examples": int(round(count)),
  }


def first_non_finite_step(losses: Sequence[tuple[int, Any]]) -> int | None:
  """The first step whose loss (or gradient norm) is NaN/inf, else None."""
  for step, value in jax.device_get(list(losses)):
    if not math.isfinite(float(np.asarray(value))):
      return int(step)
  return None
