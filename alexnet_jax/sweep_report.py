"""A sweep's report (`write_report`): a row per point, plots, and a verdict per paper claim.

It reads only the points' files, so it works while points still run and on
points run from printed commands.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re

from alexnet_jax import config_lib
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
      wall_time_sec=state.get("wall_time_sec"),
      target_step=_first_step_reaching(records, target_train_top1),
      records=records)


# ----------------------------------------------------------------------------
# Claims: an arm against the baseline, seed by seed, with a verdict.
# ----------------------------------------------------------------------------

# Two-sided 95% Student-t quantiles by degrees of freedom (1.96 beyond 30).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
  return next((_T95[k] for k in sorted(_T95) if k >= df), 1.96)


def _epochs(point_dir, step):
  """Training epochs at `step`: from data.json and config.json, or (runs older than
  data.json) the "N steps per epoch" of the point's sweep.log."""
  root = workdir_lib.path(point_dir)
  if (root / workdir_lib.DATA_FILE).exists():
    config = workdir_lib.read_json(root / workdir_lib.CONFIG_FILE, "config")
    data = workdir_lib.read_json(root / workdir_lib.DATA_FILE, "data")
    return step * config["batch_size"] / data["num_train_examples"]
  found = re.search(r"(\d+) steps per epoch", (root / sweep_lib.LOG_FILE).read_text())
  return step / int(found.group(1))


def _first_step_reaching(records, train_top1):
  """The first step whose logged train top-1 reached `train_top1`, or None."""
  return next((int(r["step"]) for r in sorted(records, key=lambda r: r["step"])
               if r.get("train_top1", -1) >= train_top1), None)


def _epochs_to_train_top1(point_dir, res: PointResult, claim):
  """(epochs until a logged train top-1 >= threshold, reached?); the run's length if never."""
  step = _first_step_reaching(res.records, claim.threshold)
  return _epochs(point_dir, (res.steps or 0) if step is None else step), step is not None


def _final(res: PointResult, key):
  rs = sorted((r for r in res.records if key in r), key=lambda r: r["step"])
  return rs[-1][key] if rs else None


def _points(a, b=0.0):
  """(100 * (a - b), exact) for accuracies a and b, or None when either is missing."""
  return None if a is None or b is None else (100 * (a - b), True)


# metric name -> (what it is, fn(point_dir, PointResult, claim) -> (value, exact?) or None).
CLAIM_METRICS = {
    "final_eval_top1": ("final eval top-1 (points)", lambda d, r, c: _points(r.final_top1)),
    "epochs_to_train_top1": ("epochs to train top-1 ≥ {threshold:g}", _epochs_to_train_top1),
    "overfit_gap": ("final train top-1 − eval top-1 (points)",
                    lambda d, r, c: _points(_final(r, "train_top1"), r.final_top1)),
    "ema_gain": ("EMA − raw eval top-1 (points; 0 without EMA)",
                 lambda d, r, c: _points(_final(r, "ema_eval_top1") or r.final_top1,
                                         r.final_top1)),
    "ten_crop_gain": ("10-crop − centre-crop eval top-1 (points)",
                      lambda d, r, c: _points(r.final_top1, _final(r, "eval_center_top1"))),
}


@dataclasses.dataclass
class ClaimResult:
  claim: object
  effects: list  # per seed: metric(arm) - metric(baseline), or metric(baseline) alone
  censored: bool  # some run never reached the threshold (its effect is a bound)
  mean: float | None
  low: float | None
  high: float | None
  verdict: str


def judge(effects, expect: int) -> tuple[float | None, float | None, float | None, str]:
  """(mean, 95% interval low, high, verdict) of per-seed effects; the interval decides."""
  n = len(effects)
  if n < 2:
    return (effects[0] if effects else None), None, None, f"inconclusive (n={n})"
  mean = sum(effects) / n
  sd = (sum((e - mean) ** 2 for e in effects) / (n - 1)) ** 0.5
  half = t95(n - 1) * sd / n ** 0.5
  low, high = mean - half, mean + half
  if low * expect > 0 and high * expect > 0:
    verdict = "reproduced"
  elif low * expect < 0 and high * expect < 0:
    verdict = "contradicted"
  else:
    verdict = "inconclusive"
  return mean, low, high, verdict


def _key(overrides) -> str:
  """A point's overrides as a key; JSON, so a tuple value and its stored list are one key."""
  return json.dumps(overrides, sort_keys=True)


def claim_results(workdir, claims) -> list[ClaimResult]:
  """Each claim's per-seed effects and verdict, from the finished points of the sweep."""
  root = workdir_lib.path(workdir)
  points = sweep_lib.read_sweep_file(root).get("points", [])
  by_overrides = {}
  for p in points:
    if sweep_lib.run_finished(root / p["name"]):
      by_overrides[_key(p["overrides"])] = root / p["name"]
  seeds = sorted({p["overrides"].get("seed") for p in points})
  results = []
  for claim in claims:
    _, fn = CLAIM_METRICS[claim.metric]
    effects, censored = [], False
    for seed in seeds:
      base_dir = by_overrides.get(_key({"seed": seed}))
      arm_dir = base_dir if not claim.arm else by_overrides.get(_key(dict(claim.arm, seed=seed)))
      if base_dir is None or arm_dir is None:
        continue
      base = fn(base_dir, summarize_point(base_dir), claim)
      arm = fn(arm_dir, summarize_point(arm_dir), claim)
      if base is None or arm is None:
        continue
      censored |= not (base[1] and arm[1])
      effects.append(arm[0] - base[0] if claim.arm else arm[0])
    mean, low, high, verdict = judge(effects, claim.expect)
    if censored and verdict != "reproduced":
      verdict += " (threshold not reached)"
    results.append(ClaimResult(claim, effects, censored, mean, low, high, verdict))
  return results


def _claims_table(results) -> list[str]:
  lines = ["## The paper's claims", "",
           "| claim (paper) | arms | metric | effect, mean [95% CI] | seeds | verdict |",
           "|---|---|---|---|---:|---|"]
  for r in results:
    c = r.claim
    arms = ("baseline only" if not c.arm else
            "baseline vs " + ", ".join(f"`{k}={v}`" for k, v in c.arm.items()))
    what = CLAIM_METRICS[c.metric][0].format(threshold=c.threshold or 0)
    metric = what if not c.arm else f"Δ {what}, arm − baseline"
    bound = "≥ " if r.censored and c.expect > 0 else ""
    effect = ("—" if r.mean is None else f"{bound}{r.mean:+.2f}" + (
        "" if r.low is None else f" [{r.low:+.2f}, {r.high:+.2f}]"))
    lines.append(f"| **{c.name}** ({c.section}): \"{c.quote}\" | {arms} | {metric} "
                 f"(paper: {'> 0' if c.expect > 0 else '< 0'}) | {effect} | {len(r.effects)} "
                 f"| {r.verdict} |")
  lines += ["", "Effects are paired by seed (same init, data order and augmentation); the "
            "interval is mean ± t(0.975, n−1)·sd/√n over seeds. A claim is reproduced when "
            "the whole interval lies on the paper's side of zero, contradicted when it lies "
            "on the other side, and inconclusive otherwise. \"Threshold not reached\": a run "
            "never reached the training-accuracy threshold, so its epochs are a lower bound.",
            ""]
  return lines


def _claims(workdir):
  """The CLAIMS of the sweep file that made `workdir`, or ()."""
  spec = sweep_lib.read_sweep_file(workdir)
  if not spec.get("path") or not workdir_lib.path(spec["path"]).exists():
    return ()
  return tuple(getattr(config_lib.load_module(spec["path"]), "CLAIMS", ()))


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
  for label, members in _by_arm(results).items():
    # The mean over seeds at the steps every seed logged.
    series = [{r["step"]: r[key] for r in res.records if key in r} for res in members]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
      continue
    ys = [sum(s[t] for s in series) / len(series) for t in steps]
    ys = [transform(y) for y in ys] if transform else ys
    if len(members) > 1:
      label += f" (mean of {len(members)} seeds)"
    ax.plot(steps, ys, label=label, marker="." if len(steps) < 40 else None)
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
  workdir_lib.write_bytes_atomic(path, buffer.getvalue())  # local or cloud, whole or not at all


def _by_arm(results) -> dict[str, list]:
  """Points grouped by their name without the `seed=N` part (`baseline` when nothing is left)."""
  groups: dict[str, list] = {}
  for res in results:
    label = ",".join(p for p in res.name.split(",") if not p.startswith("seed=")) or sweep_lib.BASELINE
    groups.setdefault(label, []).append(res)
  return groups


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
  claims = _claims(root)
  if claims:
    lines += _claims_table(claim_results(root, claims))
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

