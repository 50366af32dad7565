"""Sweeps: grid expansion and naming, printed commands, the runner's skip/resume/failure
handling, and the report's numbers.

The runner tests train real points with main.py on `configs/default.py:tiny`
(fake data, 4 steps, one simulated device) so each finishes in seconds; the
whole sequence (a printed command run by a shell, an interrupted point, its
resume, a failing point, a rerun that skips finished points) shares one
module-scoped sweep directory. The report is checked against hand-written
metrics files whose numbers are known exactly.
"""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from alexnet_jax import config_lib
from alexnet_jax import sweep
from alexnet_jax import sweep_cli
from alexnet_jax import sweep_launch
from alexnet_jax import sweep_report
from alexnet_jax import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.helpers import assert_bitwise_equal, child_env, final_params, write_sweep

# ----------------------------------------------------------------------------- grids and names


def test_axis_and_product_order():
  grid = sweep.product(sweep.axis("model.activation", ["relu", "tanh"]),
                       sweep.axis("model.lrn", [True, False]))
  assert grid == [
      {"model.activation": "relu", "model.lrn": True},
      {"model.activation": "relu", "model.lrn": False},
      {"model.activation": "tanh", "model.lrn": True},
      {"model.activation": "tanh", "model.lrn": False},
  ]
  # An axis can be any list of dicts, e.g. two keys that move together.
  zipped = [{"batch_size": 64, "learning_rate": 0.01}, {"batch_size": 128, "learning_rate": 0.02}]
  assert len(sweep.product(sweep.axis("seed", [0, 1, 2]), zipped)) == 6
  with pytest.raises(ValueError, match="overlap"):
    sweep.product(sweep.axis("seed", [0]), sweep.axis("seed", [1]))
  with pytest.raises(ValueError, match="no values"):
    sweep.axis("seed", [])


def test_one_at_a_time_keeps_baseline_and_varies_one_axis():
  grid = sweep.one_at_a_time(sweep.axis("model.activation", ["relu", "tanh", "elu"]),
                             sweep.axis("model.lrn", [True, False]))
  assert grid == [{}, {"model.activation": "tanh"}, {"model.activation": "elu"},
                  {"model.lrn": False}]


def test_point_names_are_readable_and_safe():
  assert sweep.point_name({}) == "baseline"
  assert sweep.point_name({"model.activation": "tanh", "model.lrn": False}) == \
      "model.activation=tanh,model.lrn=False"
  assert sweep.point_name({"learning_rate": 1e-5, "seed": 3}) == "learning_rate=1e-05,seed=3"
  assert sweep.point_name({"data_dir": "/data/my images"}) == "data_dir=_data_my_images"
  assert sweep.point_name({"lr_step_epochs": (30, 60)}) == "lr_step_epochs=30_60"
  long_a = sweep.point_name({"data_dir": "x" * 300 + "a"})
  long_b = sweep.point_name({"data_dir": "x" * 300 + "b"})
  assert len(long_a) <= sweep.MAX_NAME_LEN and long_a != long_b
  assert sweep.format_value((30, 60)) == "(30, 60)"
  assert sweep.format_value(0.1) == "0.1" and sweep.format_value(True) == "True"
  with pytest.raises(ValueError, match="None cannot be set"):
    sweep.format_value(None)


def _names(spec):
  return [p.name for p in sweep.load(spec).points]


def test_load_rejects_unknown_keys_and_duplicate_names(tmp_path):
  good = write_sweep(tmp_path / "good.py", 'sweep.axis("model.activation", ["relu", "tanh"])')
  assert _names(good) == ["model.activation=relu", "model.activation=tanh"]
  typo = write_sweep(tmp_path / "typo.py", 'sweep.axis("model.activaton", ["relu"])')
  with pytest.raises(ValueError, match="'model.activaton' is not a config key "
                                       r"\(did you mean 'model.activation'\?\)"):
    sweep.load(typo)
  dup = write_sweep(tmp_path / "dup.py", '[{"seed": 1}, {"seed": 1}]')
  with pytest.raises(ValueError, match="share the name"):
    sweep.load(dup)
  with pytest.raises(FileNotFoundError):
    sweep.load(str(tmp_path / "missing.py"))


def test_shipped_sweeps_load_by_name():
  for name in ("sweeps/paper_ablations", "sweeps/relu_vs_tanh", "sweeps/small_data_recipe"):
    loaded = sweep.load(name)
    assert os.path.isfile(loaded.path) and loaded.points, name


def test_paper_ablations_grids():
  path = os.path.join(REPO_ROOT, "configs/sweeps/paper_ablations.py")
  names = _names(path + ":small")
  assert names == ["baseline", "model.activation=tanh", "model.lrn=False",
                   "model.overlapping_pool=False", "model.dropout_rate=0.0", "pca_lighting=0.0",
                   "model.width_multiplier=0.5"]
  assert _names(path)[-1] == "model.variant=seed"
  assert len(_names(path + ":small,axis=activation")) == 2
  product = sweep.load(path + ":axis=activation+lrn+pooling,grid=product").points
  assert len(product) == 8
  assert product[0].overrides == {"model.activation": "relu", "model.lrn": True,
                                  "model.overlapping_pool": True}
  with pytest.raises(ValueError, match="Unknown ablation axis 'colour'"):
    sweep.load(path + ":small,axis=colour")
  module = config_lib.load_module(path)
  small, full = module.get_config("small,axis=lrn"), module.get_config()
  assert (small.dataset, small.model.variant, small.pca_lighting) == ("sklearn_digits", "small", 0.1)
  assert (full.dataset, full.model.variant, full.num_epochs) == ("imagenet2012", "paper", 90.0)


def test_relu_vs_tanh_sweep():
  path = os.path.join(REPO_ROOT, "configs/sweeps/relu_vs_tanh.py")
  assert _names(path + ":small") == ["model.activation=relu", "model.activation=tanh"]
  module = config_lib.load_module(path)
  c = module.get_config("small,lr=0.005,steps=50")
  assert (c.learning_rate, c.num_train_steps, c.weight_decay, c.model.lrn) == (0.005, 50, 0.0, False)
  assert (c.lr_schedule, c.warmup_epochs, c.model.dropout_rate) == ("constant", 0.0, 0.0)
  assert module.get_config().dataset == "cifar10"


def test_only_names_a_missing_point(tmp_path, capsys):
  path = write_sweep(tmp_path / "s.py", 'sweep.axis("seed", [0, 1])')
  with pytest.raises(SystemExit):
    sweep_cli.main([f"--sweep={path}", f"--workdir={tmp_path}/w", "--only=seed=7"])
  err = capsys.readouterr().err
  assert "seed=7" in err and "seed=0" in err and "seed=1" in err


# ----------------------------------------------------------------------------- running


def _sweep_cli(*args, fault=None):
  return subprocess.run([sys.executable, "-m", "alexnet_jax.sweep", *args], cwd=REPO_ROOT,
                        env=child_env(1, fault), capture_output=True, text=True, timeout=300)


BAD, TANH, RELU = "model.lrn=maybe", "model.activation=tanh", "model.activation=relu"


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
  """Runs one sweep through its life and returns what each stage printed.

  Points, in order: an invalid value (`model.lrn=maybe`, rejected when main.py
  parses its flags), tanh, relu.
    printed: `--print_commands` from outside the repo; relu's line run by a shell.
    first:   tanh alone (`--only`), stopped by SIGTERM after step 3: the training
             loop saves and exits 0 without its final eval.
    second:  the bad point and tanh: the bad point fails, tanh still runs after
             it and resumes from step 3.
    third:   the same again: tanh is skipped, the bad point fails again.
  Relu is left to the printed command (the runner would rerun it, as it has no
  marker, which the tests can do without).
  """
  root = tmp_path_factory.mktemp("sweep")
  spec = write_sweep(root / "tiny_sweep.py",
                      '[{"model.lrn": "maybe"}, {"model.activation": "tanh"}, '
                      '{"model.activation": "relu"}]')
  workdir = str(root / "runs")
  out = {"workdir": workdir, "spec": spec}

  cwd = os.getcwd()
  os.chdir(str(root))
  try:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
      assert sweep_cli.main([f"--sweep={spec}", f"--workdir={workdir}", "--print_commands"]) == 0
  finally:
    os.chdir(cwd)
  out["printed"] = buf.getvalue().splitlines()
  relu_line = next(line for line in out["printed"] if f"{RELU} " in line)
  # Outside the repo, as with an installed package (PYTHONPATH stands in for pip).
  env = child_env(1)
  out["printed_run"] = subprocess.run(["bash", "-c", relu_line], cwd=str(root), env=env,
                                      capture_output=True, text=True, timeout=300)

  out["first"] = _sweep_cli(f"--sweep={spec}", f"--workdir={workdir}", f"--only={TANH}",
                            fault="sigterm@step:3")
  two = [f"--sweep={spec}", f"--workdir={workdir}", f"--only={BAD}", f"--only={TANH}"]
  out["second"] = _sweep_cli(*two)
  out["third"] = _sweep_cli(*two)
  return out


def _state(runs, name):
  return sweep.read_point_state(os.path.join(runs["workdir"], name))


def _train_steps(runs, name):
  return [r["step"] for r in workdir_lib.read_metrics(os.path.join(runs["workdir"], name))
          if "train_loss" in r]


@pytest.mark.slow
def test_printed_commands_are_runnable(sweep_runs):
  lines = sweep_runs["printed"]
  assert len(lines) == 3
  for line, flag in zip(lines, ["--config.model.lrn=maybe", "--config.model.activation=tanh",
                                "--config.model.activation=relu"]):
    argv = shlex.split(line)
    # The plain training command: runs from any directory (printed from outside the repo).
    assert argv[:3] == ["python", "-m", "alexnet_jax"] and argv[-1] == flag, line
    assert f"--config={sweep_runs['spec']}" in argv
    assert argv[4] == f"--workdir={sweep_runs['workdir']}/{flag[len('--config.'):]}"
  proc = sweep_runs["printed_run"]
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = workdir_lib.read_metrics(os.path.join(sweep_runs["workdir"], RELU))
  assert sweep.run_finished(os.path.join(sweep_runs["workdir"], RELU))
  assert records[-1]["step"] == 4 and "eval_top1" in records[-1]
  config = json.load(open(os.path.join(sweep_runs["workdir"], RELU, "config.json")))
  assert config["model"]["activation"] == "relu" and config["num_train_steps"] == 4


@pytest.mark.slow
def test_interrupted_point_is_not_finished_and_resumes(sweep_runs):
  first = sweep_runs["first"]
  assert first.returncode == 1, first.stdout + first.stderr
  assert f"(1/1) {TANH}: starting" in first.stdout  # --only ran tanh alone
  assert f"{TANH}: FAILED (exit code 0, without finishing (no done.json))" in first.stdout
  second_log = open(os.path.join(sweep_runs["workdir"], TANH, sweep.LOG_FILE)).read()
  assert "Resumed from step 3" in second_log
  state = _state(sweep_runs, TANH)
  assert state["status"] == "finished" and state["attempts"] == 2
  assert _train_steps(sweep_runs, TANH) == [2, 4]
  assert state["command"][-1] == "--config.model.activation=tanh"


@pytest.mark.slow
def test_failing_point_does_not_stop_the_others(sweep_runs):
  second = sweep_runs["second"]
  assert second.returncode == 1, second.stdout + second.stderr
  out = second.stdout
  assert f"(1/2) {BAD}: starting" in out and f"(2/2) {TANH}: resuming" in out
  assert f"{BAD}: FAILED (exit code 2)" in out
  assert "Non-boolean argument" in out  # the child's one-line error, quoted from its log
  assert re.search(f"{re.escape(TANH)}: finished in \\d+s", out)
  failed = out.split("failed points")[1]
  assert BAD in failed and TANH not in failed
  assert _state(sweep_runs, BAD)["status"] == "failed"
  assert _state(sweep_runs, TANH)["status"] == "finished"
  assert "report:" in out and os.path.exists(os.path.join(sweep_runs["workdir"], "report.md"))


@pytest.mark.slow
def test_rerun_skips_finished_points(sweep_runs):
  third = sweep_runs["third"]
  assert third.returncode == 1  # the bad point still fails
  assert f"{TANH}: finished already, skipping" in third.stdout
  assert "1 failed" in third.stdout and "1 skipped" in third.stdout
  assert _state(sweep_runs, TANH)["attempts"] == 2 and _state(sweep_runs, BAD)["attempts"] == 2
  report = open(os.path.join(sweep_runs["workdir"], "report.md")).read()
  rows = {re.match(r"\| `([^`]+)`", r).group(1): r.split("|")[2].strip()
          for r in report.splitlines() if r.startswith("| `")}
  # Sweep order; relu (run from its printed command, no marker) judged by its metrics.
  assert list(rows) == [BAD, TANH, RELU]
  assert rows == {BAD: "failed", TANH: "finished", RELU: "complete"}


def _final_eval(point_dir):
  return [r for r in workdir_lib.read_metrics(point_dir) if "eval_loss" in r][-1]


@pytest.mark.slow
def test_parallel_points_run_at_once_and_match_sequential(sweep_runs, tmp_path):
  """--parallel=2 on this machine's CPU: both points at once, sharing the cores, each
  ending bitwise where its sequential run ended (tanh's was stopped and resumed)."""
  workdir = str(tmp_path / "parallel")
  proc = _sweep_cli(f"--sweep={sweep_runs['spec']}", f"--workdir={workdir}", f"--only={TANH}",
                    f"--only={RELU}", "--parallel=2")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  if len(os.sched_getaffinity(0)) >= 2:
    assert "2 point(s), 2 at a time, sharing the" in proc.stdout
  states = [sweep.read_point_state(os.path.join(workdir, n)) for n in (TANH, RELU)]
  assert all(s["status"] == "finished" for s in states)
  first, second = sorted(states, key=lambda s: s["started"])
  assert second["started"] < first["ended"], "the two points did not overlap in time"
  for name in (TANH, RELU):
    ours = final_params(os.path.join(workdir, name))
    theirs = final_params(os.path.join(sweep_runs["workdir"], name))
    assert ours[0] == theirs[0] == 4
    assert_bitwise_equal(ours[1], theirs[1])
    ours, theirs = (_final_eval(os.path.join(d, name)) for d in (workdir, sweep_runs["workdir"]))
    assert (ours["eval_loss"], ours["eval_top1"]) == (theirs["eval_loss"], theirs["eval_top1"])


def test_pinned_cpu_cores_are_split_between_points():
  kind, groups = sweep_launch.device_groups(2, pin_cpu_cores=True)
  cores = sorted(os.sched_getaffinity(0))
  if kind != "cpu" or len(cores) < 2:
    pytest.skip("needs a CPU-only machine with 2 or more cores")
  assert groups == [cores[:len(cores) // 2], cores[len(cores) // 2:2 * (len(cores) // 2)]]
  assert sweep_launch.device_groups(2) == ("cpu", [None, None])


def test_parallel_beyond_the_cores_shares_them_unless_pinned(tmp_path):
  too_many = len(os.sched_getaffinity(0)) + 1
  assert sweep_launch.device_groups(too_many) == ("cpu", [None] * too_many)
  path = write_sweep(tmp_path / "s.py", 'sweep.axis("seed", [0, 1])')
  with pytest.raises(SystemExit, match=f"--parallel={too_many} needs at least that many cpu"):
    sweep_cli.main([f"--sweep={path}", f"--workdir={tmp_path}/w", f"--parallel={too_many}",
                "--pin_cpu_cores"])


def test_a_second_sweep_on_a_locked_workdir_is_refused_in_one_line(tmp_path):
  path = write_sweep(tmp_path / "s.py", 'sweep.axis("seed", [0, 1])')
  (tmp_path / "w").mkdir()
  with workdir_lib.Lock(tmp_path / "w", command="sweep s.py"):
    with pytest.raises(SystemExit, match=r"is in use by process \d+ on this host .*sweep s.py"):
      sweep_cli.main([f"--sweep={path}", f"--workdir={tmp_path}/w"])
  assert not (tmp_path / "w" / "sweep.json").exists()


@pytest.mark.slow
def test_points_get_sigterm_when_the_launcher_is_killed(tmp_path):
  launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent('''
      import subprocess, sys
      from alexnet_jax import sweep_launch
      child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               preexec_fn=sweep_launch._dies_with_parent())
      print(child.pid, flush=True)
      child.wait()
  ''')], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
  child_pid = int(launcher.stdout.readline())
  launcher.kill()  # SIGKILL: no handler of the launcher's runs
  launcher.wait()
  deadline = time.time() + 10
  while time.time() < deadline and os.path.exists(f"/proc/{child_pid}"):
    with open(f"/proc/{child_pid}/stat") as f:
      if f.read().split()[2] == "Z":
        break
    time.sleep(0.1)
  else:
    assert not os.path.exists(f"/proc/{child_pid}"), "the point outlived its launcher"


# ----------------------------------------------------------------------------- report


def _write_metrics(path, records, torn_tail=False):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
    if torn_tail:
      f.write('{"step": 99, "train_lo')  # a run killed mid-write


def test_report_reads_the_numbers_from_metrics(tmp_path):
  workdir = tmp_path / "sweep"
  a, b = "model.activation=relu", "model.activation=tanh"
  _write_metrics(workdir / a, [
      {"step": 10, "uptime": 5.0},
      {"step": 10, "train_loss": 2.0, "train_top1": 0.50, "learning_rate": 0.01},
      {"step": 20, "train_loss": 1.0, "train_top1": 0.75, "learning_rate": 0.01},
      {"step": 20, "eval_loss": 1.1, "eval_top1": 0.70, "eval_top5": 0.90, "eval_examples": 360},
      {"step": 30, "train_loss": 0.5, "train_top1": 0.90, "learning_rate": 0.01},
      {"step": 30, "eval_loss": 1.2, "eval_top1": 0.65, "eval_top5": 0.95, "eval_examples": 360},
  ])
  with open(workdir / a / sweep.POINT_FILE, "w") as f:
    json.dump({"status": "finished", "wall_time_sec": 125.4}, f)
  # No sweep_point.json (run from a printed command): no launcher clock, so no wall time.
  _write_metrics(workdir / b, [
      {"step": 10, "train_loss": 2.2, "train_top1": 0.25},
      {"step": 20, "train_loss": 2.1, "train_top1": 0.50},
      {"step": 20, "uptime": 61.0},
      {"step": 20, "eval_loss": 2.0, "eval_top1": 0.40, "eval_top5": 0.80, "eval_examples": 360},
      {"step": 40, "uptime": 3700.2},
      {"step": 40, "train_loss": 1.5, "train_top1": 0.70},
      {"step": 40, "eval_loss": 1.6, "eval_top1": 0.55, "eval_top5": 0.85, "eval_examples": 360},
  ], torn_tail=True)
  with open(workdir / b / workdir_lib.DONE_FILE, "w") as f:  # what train.py writes at the end
    json.dump({"step": 40, "total_steps": 40, "metrics": {}}, f)
  # Metrics but no done.json: a run that stopped early.
  _write_metrics(workdir / "stopped", [{"step": 10, "train_loss": 2.3, "train_top1": 0.1}])
  with open(workdir / sweep.SWEEP_FILE, "w") as f:  # sweep order: tanh first
    json.dump({"sweep": "x.py", "points": [{"name": b}, {"name": a}]}, f)

  assert sweep_cli.main(["report", f"--workdir={workdir}"]) == 0
  report = (workdir / "report.md").read_text()
  rows = [line for line in report.splitlines() if line.startswith("| `")]
  assert rows == [
      f"| `{b}` | complete | 40 | 55.00% | 55.00% | 85.00% | 85.00% | — | — |",
      f"| `{a}` | finished | 30 | 65.00% | 70.00% | 95.00% | 95.00% | 20 | 2m05s |",
      "| `stopped` | incomplete | 10 | — | — | — | — | — | — |",
  ]
  for png in ("train_loss.png", "train_error.png", "eval_top1.png"):
    data = (workdir / png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    assert f"({png})" in report
  # Another target moves the time-to-target column only.
  sweep_report.write_report(str(workdir), target_train_top1=0.5)
  rows = [line for line in (workdir / "report.md").read_text().splitlines()
          if line.startswith("| `")]
  assert rows[0].split("|")[8].strip() == "20" and rows[1].split("|")[8].strip() == "10"


def test_report_without_points_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="No sweep points"):
    sweep_report.write_report(str(tmp_path))


# ----------------------------------------------------------------------------- claims


def test_judge_is_a_paired_t_interval_and_the_interval_decides():
  effects = [-1.0, -2.0, -3.0]  # mean -2, sd 1: half-width 4.303 / sqrt(3)
  mean, low, high, verdict = sweep_report.judge(effects, expect=-1)
  half = 4.303 / 3 ** 0.5
  assert (mean, low, high) == pytest.approx((-2.0, -2.0 - half, -2.0 + half))
  assert verdict == "inconclusive"  # the point estimate agrees, the interval spans zero
  assert sweep_report.judge([-2.0, -2.1, -1.9], expect=-1)[3] == "reproduced"
  assert sweep_report.judge([-2.0, -2.1, -1.9], expect=+1)[3] == "contradicted"
  assert sweep_report.judge([1.0], expect=+1)[3] == "inconclusive (n=1)"


def _claims_sweep(tmp_path, finals, center, relu_steps, tanh_reached):
  """A finished claims sweep on disk: 3 seeds x (baseline, tanh, no LRN)."""
  claims_file = tmp_path / "claims.py"
  claims_file.write_text(textwrap.dedent('''
      from alexnet_jax import config_lib, sweep
      CLAIMS = (
          sweep.Claim("ReLU", "§3.1", "q", {"model.activation": "tanh"},
                      "epochs_to_train_top1", expect=+1, threshold=0.5),
          sweep.Claim("LRN", "§3.3", "q", {"model.lrn": False}, "final_eval_top1", expect=-1),
          sweep.Claim("10 crops", "§4.1", "q", None, "ten_crop_gain", expect=+1),
      )
      def get_config():
        return config_lib.load("default:tiny")
      def get_sweep():
        return sweep.product(sweep.axis("seed", [0, 1, 2]),
                             [{}, {"model.activation": "tanh"}, {"model.lrn": False}])
  '''))
  workdir = tmp_path / "w"
  spec = sweep.load(str(claims_file))
  sweep.write_sweep_file(workdir, spec, str(claims_file), [])
  for point in spec.points:
    seed, arm = point.overrides["seed"], point.name.partition(",")[2] or "base"
    top1 = finals[arm][seed]
    records = [{"step": 100, "eval_top1": top1, "eval_center_top1": center[seed]}]
    reached = relu_steps[seed] if arm != "model.activation=tanh" else (
        3 * relu_steps[seed] if tanh_reached else None)
    records += [{"step": s, "train_top1": 0.6 if s == reached else 0.1} for s in (10, 20, 30, 60, 90, 100)]
    _write_metrics(workdir / point.name, records)
    (workdir / point.name / "config.json").write_text(json.dumps({"batch_size": 100}))
    (workdir / point.name / "data.json").write_text(json.dumps({"num_train_examples": 1000}))
    (workdir / point.name / "done.json").write_text(json.dumps({"step": 100}))
  return workdir


def test_claims_are_read_off_the_points_and_judged_seed_by_seed(tmp_path):
  finals = {"base": [0.60, 0.62, 0.61], "model.lrn=False": [0.58, 0.60, 0.595],
            "model.activation=tanh": [0.5, 0.5, 0.5]}
  workdir = _claims_sweep(tmp_path, finals, center=[0.59, 0.60, 0.61], relu_steps=[20, 20, 30],
                          tanh_reached=True)
  relu, lrn, crops = sweep_report.claim_results(workdir, sweep_report._claims(workdir))  # pylint: disable=protected-access
  # epochs = step * batch 100 / 1000 examples; tanh needs 3x the steps.
  assert relu.effects == pytest.approx([4.0, 4.0, 6.0]) and relu.verdict == "reproduced"
  assert lrn.effects == pytest.approx([-2.0, -2.0, -1.5])
  assert lrn.verdict == "reproduced" and not lrn.censored
  assert crops.effects == pytest.approx([1.0, 2.0, 0.0]) and crops.verdict == "inconclusive"
  report = sweep_report.write_report(workdir).read_text()
  assert "| **LRN** (§3.3)" in report and "-1.83 [" in report


def test_a_threshold_never_reached_is_a_bound_not_a_number(tmp_path):
  finals = {k: [0.6] * 3 for k in ("base", "model.lrn=False", "model.activation=tanh")}
  workdir = _claims_sweep(tmp_path, finals, center=[0.6] * 3, relu_steps=[10, 90, 90],
                          tanh_reached=False)
  relu = sweep_report.claim_results(workdir, sweep_report._claims(workdir))[0]  # pylint: disable=protected-access
  assert relu.censored and relu.effects == pytest.approx([9.0, 1.0, 1.0])  # 10 epochs run
  assert "≥ +3.67" in sweep_report.write_report(workdir).read_text()


def test_a_claim_whose_arm_sets_a_tuple_is_judged(tmp_path):
  """Overrides are stored as JSON, where a tuple reads back as a list: the arm must still be
  found (it was a TypeError: unhashable list)."""
  claims_file = tmp_path / "claims.py"
  claims_file.write_text(textwrap.dedent('''
      from alexnet_jax import config_lib, sweep
      CLAIMS = (sweep.Claim("Crops", "§4.1", "q", {"inception_area_range": (0.35, 1.0)},
                            "final_eval_top1", expect=+1),)
      def get_config():
        return config_lib.load("default:tiny")
      def get_sweep():
        return sweep.product(sweep.axis("seed", [0, 1]),
                             [{}, {"inception_area_range": (0.35, 1.0)}])
  '''))
  workdir = tmp_path / "w"
  spec = sweep.load(str(claims_file))
  sweep.write_sweep_file(workdir, spec, str(claims_file), [])
  for point in spec.points:
    arm = "inception_area_range" in point.overrides
    _write_metrics(workdir / point.name, [{"step": 10, "eval_top1": 0.5 + 0.1 * arm}])
    (workdir / point.name / "done.json").write_text(json.dumps({"step": 10}))
  (crops,) = sweep_report.claim_results(workdir, sweep_report._claims(workdir))  # pylint: disable=protected-access
  assert crops.effects == pytest.approx([10.0, 10.0])
