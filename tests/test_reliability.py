"""Round-3 probes: a run is bound to its data, every check precedes the first write,
artifacts are replaced whole, a folder walk visits each directory once.

In-process (no subprocesses): each test exercises the library function that
owns the behaviour; `test_fault_matrix.py` keeps the real-process cases.
"""

import logging
import os
import shutil
import textwrap

import pytest

from alexnet_jax import config_lib
from alexnet_jax import data
from alexnet_jax import sweep
from alexnet_jax import train
from alexnet_jax import workdir as workdir_lib
from tests.conftest import FLOWERS


def _folder_config(root, **overrides):
  c = config_lib.load("default:tiny")
  c.dataset, c.data_dir, c.num_classes = "imagefolder", str(root), None
  c.num_train_steps = 2
  c.update(overrides)
  return c


# ---- a config file in the plain form of the flax examples ---------------------------


PLAIN_CONFIG = textwrap.dedent('''
    from alexnet_jax import config_lib

    def get_config():
      c = config_lib.load("default:tiny")
      c.seed = 7
      return c
''')


def test_a_plain_get_config_loads_by_path_in_the_cli_and_in_sweeps(tmp_path):
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  config_file = tmp_path / "my_config.py"
  config_file.write_text(PLAIN_CONFIG)
  assert config_lib.load(str(config_file)).seed == 7
  argv = cli.check_config_args(["main.py", f"--config={config_file}", "--workdir=w"])
  assert argv[1] == f"--config={config_file}"
  with pytest.raises(ValueError, match=r"takes no argument, but the config was given ':x'"):
    config_lib.load(f"{config_file}:x")
  sweep_file = tmp_path / "my_sweep.py"
  sweep_file.write_text(PLAIN_CONFIG + textwrap.dedent('''
      from alexnet_jax import sweep

      def get_sweep():
        return sweep.axis("model.lrn", [True, False])
  '''))
  assert [p.name for p in sweep.load(str(sweep_file)).points] == ["model.lrn=True",
                                                                  "model.lrn=False"]


# ---- folder walks ---------------------------------------------------------------------


def test_a_symlink_loop_lists_each_real_folder_once(tmp_path, caplog):
  root = tmp_path / "flowers"
  shutil.copytree(FLOWERS, root)
  real = len(list((root / "train").rglob("*.jpg")))
  os.symlink("..", root / "train" / "daisy" / "loop")  # back up to train/
  os.symlink("../..", root / "train" / "roses" / "loop2")  # up to the root
  with caplog.at_level(logging.WARNING):
    info = data.dataset_info(_folder_config(root))
  assert info.num_train_examples == real
  assert "symlink loop" in caplog.text and "loop" in caplog.text


def test_a_single_class_is_refused(tmp_path):
  for split in ("train", "val"):
    shutil.copytree(FLOWERS / split / "daisy", tmp_path / split / "daisy")
  with pytest.raises(ValueError, match="has 1 class .* needs at least 2"):
    data.dataset_info(_folder_config(tmp_path))


# ---- a run is bound to its data --------------------------------------------------------


def test_a_renamed_or_added_class_folder_is_refused_before_anything_changes(tmp_path):
  root = tmp_path / "flowers"
  shutil.copytree(FLOWERS, root)
  workdir = tmp_path / "run"
  final = train.train_and_evaluate(_folder_config(root), str(workdir))
  assert final["step"] == 2
  stored = {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  assert "fingerprint" in (workdir / workdir_lib.DATA_FILE).read_text()

  def refused(config):
    with pytest.raises(workdir_lib.WorkdirError, match="trained on different data") as e:
      train.train_and_evaluate(config, str(workdir))
    now = {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert now == stored  # done.json, config.json, metrics and checkpoints untouched
    return str(e.value)

  # A renamed class folder would permute the labels.
  for split in ("train", "val"):
    os.rename(root / split / "daisy", root / split / "adaisy")
  message = refused(_folder_config(root, num_train_steps=4))
  assert "class_names" in message and "'adaisy'" in message
  for split in ("train", "val"):
    os.rename(root / split / "adaisy", root / split / "daisy")
  # A sixth class on a finished run: refused before done.json or config.json change.
  for split in ("train", "val"):
    shutil.copytree(root / split / "roses", root / split / "zinnia")
  refused(_folder_config(root))
  # The same photos under a different path are the same data: the run is done.
  for split in ("train", "val"):
    shutil.rmtree(root / split / "zinnia")
  moved = tmp_path / "moved"
  os.rename(root, moved)
  assert train.train_and_evaluate(_folder_config(moved), str(workdir))["already_finished"]


# ---- the logging window's clock ----------------------------------------------------------


def test_a_save_that_flushes_a_window_is_not_charged_to_the_next_one():
  now = [0.0]
  clock = train.WindowClock(now=lambda: now[0])
  now[0] = 10.0  # 10 s of training...
  with clock.paused():  # ...then a save: the flush inside it ends the window,
    now[0] = 11.0
    assert clock.lap() == 11.0  # (the wait for the last step counts as training)
    now[0] = 15.0  # and the save itself takes 4 s.
  now[0] = 17.0  # 2 s of training in the new window.
  assert clock.lap() == pytest.approx(2.0)
  with clock.paused():
    now[0] = 20.0  # a 3 s eval inside a window
  now[0] = 21.0
  assert clock.lap() == pytest.approx(1.0)


# ---- artifacts are replaced whole ------------------------------------------------------


def test_a_write_killed_midway_keeps_the_previous_file(tmp_path, monkeypatch):
  target = tmp_path / "model.jax"
  target.write_bytes(b"good artifact")

  def killed(fd):
    raise KeyboardInterrupt  # a kill between writing and renaming

  monkeypatch.setattr(workdir_lib.os, "fsync", killed)
  with pytest.raises(KeyboardInterrupt):
    workdir_lib.write_bytes_atomic(target, b"half")
  assert target.read_bytes() == b"good artifact"
  assert os.listdir(tmp_path) == ["model.jax"]  # no temporary file left


@pytest.mark.slow
def test_an_export_killed_midway_keeps_the_previous_artifact(finished_tiny_run, tmp_path,
                                                            monkeypatch):
  from alexnet_jax import export, inference  # pylint: disable=g-import-not-at-top
  predictor = inference.load(str(finished_tiny_run))
  output = tmp_path / "model.jax"
  export.export_predictor(predictor, str(output), crops=1)
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  assert set(before) == {"model.jax", "model.jax.json", "alexnet_preprocess.py"}
  writes = []

  def killed(fd):
    writes.append(fd)
    raise KeyboardInterrupt  # the process dies between writing and renaming

  monkeypatch.setattr(workdir_lib.os, "fsync", killed)
  with pytest.raises(KeyboardInterrupt):
    export.export_predictor(predictor, str(output), crops=10)
  assert writes and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---- paths that checkpoints cannot hold ------------------------------------------------


def test_a_workdir_path_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
  workdir = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")
  with pytest.raises(workdir_lib.WorkdirError, match="is not valid UTF-8"):
    workdir_lib.check_resumable(workdir, config_lib.load("default:tiny"))
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_finished_run_on_a_now_read_only_workdir_is_finished_not_unwritable(
    finished_tiny_run, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "ro"
  shutil.copytree(finished_tiny_run, workdir)
  mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(workdir), str(workdir)],
                           capture_output=True, text=True)
  if mounted.returncode:
    pytest.skip(f"cannot bind-mount read-only here: {mounted.stderr.strip()}")
  try:
    with pytest.raises(OSError):
      (workdir / "probe").write_text("x")  # really read-only, even for root
    final = train.train_and_evaluate(config_lib.load("default:tiny"), str(workdir))
    assert final["already_finished"] and final["step"] == 4
  finally:
    subprocess.run(["umount", "-l", str(workdir)], check=False)
