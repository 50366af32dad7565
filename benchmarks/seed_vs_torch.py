"""A config of ours against the seed's PyTorch recipe, seed by seed, in one run.

  python benchmarks/seed_vs_torch.py --data_dir=../shared/data/flowers-mini \
      [--config=flowers] [--seeds=0,1,2] [--epochs=N] [--prepared_dir=DIR] [--json=FILE]

With --prepared_dir, alexnet_jax trains from that prepared copy of --data_dir
(`python -m alexnet_jax.prepare`, made first if DIR has none, its time reported
once) instead of decoding the JPEGs: each code base at its fastest, PyTorch
decoding the photos once into memory (w0-decoded).

For every seed it trains `python main.py --config=CONFIG` on the folder and
`benchmarks/seed_recipe_torch.py` (the seed project's code in PyTorch, given
CONFIG's recipe: optimiser, schedule, label smoothing, crop scale, epochs),
alternating which goes first so both see the same drift in machine load, and
reports each one's best and final validation top-1 and the wall time of the
whole process (start-up, data, compilation or not, training, per-epoch eval).
The JAX runs share one fresh compilation cache, so the first compiles and the
others reuse its programs, as a user's reruns would.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(cmd, env=None):
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  return time.perf_counter() - start, proc


def run_jax(config, data_dir, seed, workdir, cache_dir, extra=(), prepared=False):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  wall, _ = _run([sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}",
                  f"--config.dataset={'prepared' if prepared else 'imagefolder'}",
                  f"--config.data_dir={data_dir}",
                  f"--config.seed={seed}", f"--config.compilation_cache_dir={cache_dir}",
                  *extra], env)
  from alexnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  evals = [r["eval_top1"] for r in workdir_lib.read_metrics(workdir) if "eval_top1" in r]
  return {"best": max(evals), "final": evals[-1], "wall_s": wall, "evals": len(evals)}


def torch_recipe_flags(config_name, epochs=None):
  """The flags that make benchmarks/seed_recipe_torch.py train CONFIG's recipe.

  Fails when the config changes something the PyTorch script does not implement,
  so the comparison is always recipe for recipe.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load(config_name)
  fixed = {"model.variant": (c.model.variant, "seed"), "augmentation": (c.augmentation, "inception"),
           "image_size": (c.image_size, 224), "eval_resize": (c.eval_resize, "stretch"),
           "eval_crops": (c.eval_crops, 1), "pca_lighting": (c.pca_lighting, 0.0),
           "mean_rgb": (tuple(c.mean_rgb), (0.5,) * 3), "std_rgb": (tuple(c.std_rgb), (0.5,) * 3),
           "optimizer in adam/adamw": (c.optimizer in ("adam", "adamw"), True),
           "lr_schedule in constant/cosine": (c.lr_schedule in ("constant", "cosine"), True),
           "inception_area_range[1]": (c.inception_area_range[1], 1.0)}
  differ = [f"{k}={v!r} (the script has {want!r})" for k, (v, want) in fixed.items() if v != want]
  if differ:
    raise SystemExit(f"benchmarks/seed_recipe_torch.py cannot train {config_name}: "
                     + "; ".join(differ))
  return ["--epochs", str(int(epochs or c.num_epochs)), "--batch_size", str(c.batch_size),
          "--lr", str(c.learning_rate), "--optimizer", c.optimizer,
          "--weight_decay", str(c.weight_decay), "--schedule", c.lr_schedule,
          "--warmup_epochs", str(c.warmup_epochs), "--label_smoothing", str(c.label_smoothing),
          "--crop_scale_min", str(c.inception_area_range[0])]


def run_torch(data_dir, seed, out, threads, setting, recipe):
  """setting: WORKERS-CACHE, e.g. w0-decoded (fastest here) or w2-none (ImageFolder and
  two DataLoader workers, which reproduces the seed project's published numbers)."""
  workers, cache = setting.split("-")
  wall, _ = _run([sys.executable, "benchmarks/seed_recipe_torch.py", *recipe,
                  f"--data_dir={data_dir}",
                  "--seeds", str(seed), "--threads", str(threads), "--workers", workers[1:],
                  "--cache", cache, "--json", str(out)])
  (r,) = json.loads(pathlib.Path(out).read_text())["per_seed"]
  return {"best": r["best_val_top1"], "final": r["final_val_top1"], "wall_s": wall}


def main(argv=None):
  sys.path.insert(0, str(REPO))
  from benchmarks import throughput as benchmark  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--config", default="flowers")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count())
  parser.add_argument("--torch_settings", default="w0-decoded,w2-none",
                      help="PyTorch runs per seed, WORKERS-CACHE: w0-decoded decodes once, in "
                           "process; w2-none is ImageFolder with two DataLoader workers")
  parser.add_argument("--json", default=None)
  parser.add_argument("--jax_only", action="store_true")
  parser.add_argument("--epochs", type=int, default=None, help="both sides (default: CONFIG's)")
  parser.add_argument("--prepared_dir", default=None,
                      help="alexnet_jax trains from this prepared copy of --data_dir")
  args, extra = parser.parse_known_args(argv)
  data_dir = str(pathlib.Path(args.data_dir).resolve())
  recipe = torch_recipe_flags(args.config, args.epochs)
  if args.epochs:
    extra = [f"--config.num_epochs={args.epochs}", *extra]
  jax_data, prepare_s = data_dir, None
  if args.prepared_dir:
    jax_data = str(pathlib.Path(args.prepared_dir).resolve())
    if not (pathlib.Path(jax_data) / "dataset.json").exists():
      prepare_s, _ = _run([sys.executable, "-m", "alexnet_jax.prepare", f"--config={args.config}",
                           "--config.dataset=imagefolder", f"--config.data_dir={data_dir}",
                           f"--output={jax_data}"])
      print(f"prepared {jax_data} in {prepare_s:.0f} s (once)", flush=True)
  print("PyTorch recipe flags:", " ".join(recipe), flush=True)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "xla_cache")
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
      load = os.getloadavg()[0]
      names = ["jax"] + ([] if args.jax_only else
                         [f"torch {t}" for t in args.torch_settings.split(",")])
      order = names if i % 2 == 0 else names[::-1]
      row = {"seed": seed, "load_before": load}
      for name in order:
        if name == "jax":
          row[name] = run_jax(args.config, jax_data, seed, os.path.join(tmp, f"jax{seed}"),
                              cache, extra, prepared=bool(args.prepared_dir))
        else:
          row[name] = run_torch(data_dir, seed, os.path.join(tmp, f"torch{seed}.json"),
                                args.torch_threads, name.split()[1], recipe)
      rows.append(row)
      print(f"seed {seed} (load {load:.1f}): "
            + "; ".join(f"{n} best {row[n]['best']:.3f} final {row[n]['final']:.3f} in "
                        f"{row[n]['wall_s']:.0f} s" for n in names), flush=True)
  summary = {"config": args.config, "torch_recipe_flags": recipe, "data_dir": data_dir, "rows": rows,
             "machine": f"{os.cpu_count()} cores, {benchmark.cpu_info()['model']}", "extra_flags": extra,
             "jax_data": jax_data, "prepare_s": prepare_s}
  for name in [n for n in rows[0] if n not in ("seed", "load_before")]:
    summary[f"{name} min best"] = min(r[name]["best"] for r in rows)
    summary[f"{name} mean best"] = statistics.mean(r[name]["best"] for r in rows)
    summary[f"{name} median wall s"] = statistics.median(r[name]["wall_s"] for r in rows)
    summary[f"{name} max wall s"] = max(r[name]["wall_s"] for r in rows)
  print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
