"""A sweep's report: final and best eval accuracy, time to a training-accuracy target,
wall time and status of every point, with loss/error/accuracy plots.

Works while points still run (they show as running or queued) and on points
run from printed commands (judged by their own files). Reads only the points'
files (metrics.jsonl, done.json, sweep_point.json), so it runs anywhere
matplotlib does, on local or cloud workdirs.
"""

from __future__ import annotations

import dataclasses
import io

from alexnet_jax import sweep as sweep_lib
from alexnet_jax import workdir as workdir_lib


@dataclasses.dataclass
class PointResult:
  """What the report says about one point, read from its metrics.jsonl."""
  name: str
  status: str
  steps: int | None
  final_top1: float | None
  final_top5: float | None
  best_top1: float | None
  best_top5: float | None
  wall_time_sec: float | None
  target_step: int | None  # first step whose logged train_top1 reached the target
  records: list


def summarize_point(point_dir, *, target_train_top1: float = 0.75) -> PointResult:
  """Final/best eval accuracy, steps, wall time and time-to-target of one point.

  Wall time is the launchers' clock summed over attempts (sweep_point.json);
  points run from printed commands have none.
  """
  records = workdir_lib.read_metrics(point_dir)
  state = sweep_lib.read_point_state(point_dir)
  evals = [r for r in records if "eval_top1" in r]
  final = max(reversed(evals), key=lambda r: r["step"]) if evals else {}
  wall = state.get("wall_time_sec")
  target_step = None
  for r in sorted((r for r in records if "train_top1" in r), key=lambda r: r["step"]):
    if r["train_top1"] >= target_train_top1:
      target_step = int(r["step"])
      break
  status = state.get("status") or ("complete" if sweep_lib.run_finished(point_dir) else
                                   "incomplete" if records else "no metrics")
  return PointResult(
      name=workdir_lib.path(point_dir).name,
      status=status,
      steps=max((int(r["step"]) for r in records), default=None),
      final_top1=final.get("eval_top1"),
      final_top5=final.get("eval_top5"),
      best_top1=max((r["eval_top1"] for r in evals), default=None),
      best_top5=max((r["eval_top5"] for r in evals if "eval_top5" in r), default=None),
      wall_time_sec=wall,
      target_step=target_step,
      records=records)


def _pct(x):
  return "—" if x is None else f"{100.0 * x:.2f}%"


def _duration(seconds):
  if seconds is None:
    return "—"
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def point_dirs(workdir) -> list:
  """Point directories in sweep order (sweep.json), then any others by name."""
  root = workdir_lib.path(workdir)
  ordered = [p["name"] for p in sweep_lib.read_sweep_file(root).get("points", [])]
  present = sorted(
      d.name for d in root.iterdir()
      if d.is_dir() and ((d / workdir_lib.METRICS_FILE).exists()
                         or (d / sweep_lib.POINT_FILE).exists()))
  names = [n for n in ordered if n in present] + [n for n in present if n not in ordered]
  return [root / n for n in names]


def _plot(results, path, *, key, ylabel, title, transform=None, hline=None):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  drawn = 0
  for res in results:
    rs = sorted((r for r in res.records if key in r), key=lambda r: r["step"])
    if not rs:
      continue
    ys = [transform(r[key]) if transform else r[key] for r in rs]
    ax.plot([r["step"] for r in rs], ys, label=res.name, marker="." if len(rs) < 40 else None)
    drawn += 1
  if hline is not None:
    ax.axhline(hline, color="gray", linestyle="--", linewidth=1, label=f"target {hline:g}")
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  if drawn:
    ax.legend(fontsize="small")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  plt.close(fig)
  workdir_lib.path(path).write_bytes(buffer.getvalue())


def write_report(workdir, *, target_train_top1: float = 0.75):
  """Writes workdir/report.md plus train_loss.png, train_error.png, eval_top1.png.

  Returns the report's path.
  """
  dirs = point_dirs(workdir)
  if not dirs:
    raise FileNotFoundError(f"No sweep points (subdirectories with {workdir_lib.METRICS_FILE}) in {workdir}.")
  results = [summarize_point(d, target_train_top1=target_train_top1) for d in dirs]
  target_err = 1.0 - target_train_top1
  root = workdir_lib.path(workdir)
  lines = [f"# Sweep report: {workdir}", ""]
  spec = sweep_lib.read_sweep_file(root)
  if spec:
    lines += [f"Sweep: `{spec.get('sweep')}`", ""]
  lines += [
      f"| point | status | steps | final eval top-1 | best eval top-1 | final eval top-5 "
      f"| best eval top-5 | step train top-1 ≥ {target_train_top1:g} | wall time |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in results:
    lines.append(
        f"| `{r.name}` | {r.status} | {'—' if r.steps is None else r.steps} "
        f"| {_pct(r.final_top1)} | {_pct(r.best_top1)} | {_pct(r.final_top5)} "
        f"| {_pct(r.best_top5)} | {'—' if r.target_step is None else r.target_step} "
        f"| {_duration(r.wall_time_sec)} |")
  lines += ["",
            f"\"step train top-1 ≥ {target_train_top1:g}\" is the first logged step whose "
            f"training-window accuracy reached it ({100 * target_err:g}% training error, "
            "the paper's ReLU-vs-tanh yardstick); it is only as fine as log_every_steps.",
            "", "![training loss](train_loss.png)", "",
            "![training error](train_error.png)", "", "![eval top-1](eval_top1.png)", ""]
  _plot(results, root / "train_loss.png", key="train_loss",
        ylabel="training loss", title="Training loss")
  _plot(results, root / "train_error.png", key="train_top1",
        ylabel="training error (1 - train top-1)", title="Training error",
        transform=lambda v: 1.0 - v, hline=target_err)
  _plot(results, root / "eval_top1.png", key="eval_top1",
        ylabel="eval top-1", title="Eval top-1 accuracy")
  path = root / "report.md"
  workdir_lib.write_text_atomic(path, "\n".join(lines))
  return path

