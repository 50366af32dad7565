"""The package as users install it: a wheel in a fresh virtualenv, used from another directory.

The wheel is built from this checkout and installed without dependencies into
a new venv that sees the test environment's packages through a .pth file (so
no network and no minutes of installing), never this checkout: from a
directory outside the repository the console scripts train, predict and run
a sweep, shipped configs are found by name, and the notebook runs.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import write_sweep

pytestmark = pytest.mark.slow


def _pins(lines):
  return {l.strip() for l in lines if l.strip() and not l.strip().startswith(("#", "-"))}


def test_pyproject_pins_are_requirements_txt():
  import tomllib  # pylint: disable=g-import-not-at-top
  project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
  declared = set(project["dependencies"]) | set(project["optional-dependencies"]["tf"])
  assert declared == _pins((REPO_ROOT / "requirements.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  root = tmp_path_factory.mktemp("package")
  source, dist = root / "source", root / "dist"
  # Built from a copy: setuptools writes build/ next to the sources.
  shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
      ".git", "tests", "runs", "build", "dist", "*.egg-info", "__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(dist), str(source)], check=True, timeout=300)
  (wheel,) = dist.glob("alexnet_jax-*.whl")
  env_dir = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
  python = env_dir / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        capture_output=True, text=True, check=True).stdout.strip()
  # The test environment's packages (jax, tensorflow, ...), without this checkout.
  pathlib.Path(site, "test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
  subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                  str(wheel)], check=True, timeout=300)
  work = root / "elsewhere"
  work.mkdir()
  return env_dir, work


def _run(venv, *args, timeout=600):
  env_dir, work = venv
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", MPLBACKEND="Agg",
             PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}")
  return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_installed_package_is_the_wheel_and_finds_its_configs(venv):
  proc = _run(venv, "python", "-c",
              "import alexnet_jax, json; from alexnet_jax import config_lib; "
              "print(json.dumps([alexnet_jax.__file__, config_lib.shipped_configs(), "
              "config_lib.load('quickstart').dataset]))")
  assert proc.returncode == 0, proc.stderr[-2000:]
  where, shipped, dataset = json.loads(proc.stdout)
  assert str(venv[0]) in where and str(REPO_ROOT) not in where
  assert {"default", "quickstart", "seed", "sweeps/paper_ablations"} <= set(shipped)
  assert dataset == "sklearn_digits"
  proc = _run(venv, "alexnet-train", "--help")
  assert proc.returncode == 0 and "quickstart" in proc.stdout and "--config.KEY=VALUE" in proc.stdout


def test_train_predict_sweep_and_notebook_from_another_directory(venv, flowers):
  env_dir, work = venv
  proc = _run(venv, "alexnet-train", "--config=default:tiny", "--workdir=run")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (work / "run" / "done.json").exists()
  image = str(sorted(flowers.glob("val/*/*.jpg"))[0])
  proc = _run(venv, "alexnet-predict", "--workdir=run", "--top_k=2", image)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines()[0] == image and len(proc.stdout.splitlines()) == 3

  write_sweep(work / "two.py", "sweep.axis('seed', [0, 1])", num_train_steps=2)
  proc = _run(venv, "alexnet-sweep", "--sweep=two.py", "--workdir=sweep")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = (work / "sweep" / "report.md").read_text()
  assert len(re.findall(r"\| `seed=\d` \| finished \|", report)) == 2

  notebook = REPO_ROOT / "notebooks" / "restore_in_colab.ipynb"
  script = ("import nbclient, nbformat, sys\n"
            f"nb = nbformat.read({str(notebook)!r}, as_version=4)\n"
            "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3').execute()\n"
            "print(''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'"
            " for o in c.get('outputs', [])))\n")
  env_extra = {"ALEXNET_JAX_WORKDIR": str(work / "run"), "ALEXNET_JAX_IMAGES": image}
  os.environ.update(env_extra)
  try:
    proc = _run(venv, "python", "-c", script)
  finally:
    for key in env_extra:
      os.environ.pop(key)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert str(env_dir) in proc.stdout  # the notebook imported the installed package
  assert "Restored step 4 of a 'small' AlexNet" in proc.stdout and image in proc.stdout
