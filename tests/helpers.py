"""Shared pieces for tests: a tiny model, synthetic batches, and real runs of the CLIs.

`run_main` and `child_env` start real training processes on the tiny config
(fake data, a few steps) with a chosen number of simulated CPU devices and an
optional injected fault; `final_params` reads back what a run saved.
"""

import fcntl
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np

from tests import faults
from tests.conftest import REPO_ROOT

TINY = "configs/default.py:tiny"


class TinyNet(nn.Module):
  """A two-layer conv net: enough structure to exercise the steps, fast to compile."""
  num_classes: int = 10
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(32)(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def random_batch(batch_size, image_size=16, num_classes=10, seed=0, mask=None):
  rng = np.random.default_rng(seed)
  batch = {
      "image": rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
      "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32),
  }
  if mask is not None:
    batch["mask"] = np.asarray(mask, bool)
  return batch


def child_env(devices=1, fault=None, **extra):
  """The environment of a training subprocess: `devices` simulated CPU devices, this
  checkout importable from any directory, and no fault unless one is given."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  env.update(extra)
  return with_fault(env, fault)


def with_fault(env, fault=None):
  """`env` set up so the training process it starts fires `fault` (tests/faults.py), or none."""
  env = dict(env)
  paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != faults.SITE_DIR]
  env.pop(faults.ENV, None)
  if fault:
    faults.parse(fault)  # A typo fails here, not silently in the child.
    env[faults.ENV] = fault
    paths.insert(0, faults.SITE_DIR)
  env["PYTHONPATH"] = os.pathsep.join(paths)
  return env


def run_main(workdir, *overrides, config=TINY, fault=None, timeout=300, devices=2):
  """`python main.py --config=CONFIG --workdir=WORKDIR OVERRIDES...`, captured."""
  cmd = [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}", *overrides]
  return subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(devices, fault), capture_output=True,
                        text=True, timeout=timeout)


def shared_run(basetemp, name, *overrides, in_process=False, **run_main_kwargs) -> pathlib.Path:
  """A finished `run_main` that the whole test session shares; copy it before changing it.

  Under pytest-xdist the workers' base directories (.../popen-gwN) share a
  parent, so the first worker to ask trains and the others wait on a file lock
  and reuse the run. `in_process`: trained by `train_and_evaluate` in this
  process (on its 8 devices) instead of `python main.py`.
  """
  shared = pathlib.Path(basetemp)
  if os.environ.get("PYTEST_XDIST_WORKER"):
    shared = shared.parent
  workdir = shared / name
  with open(shared / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (workdir / "done.json").exists():
      if in_process:
        _train_in_process(workdir, run_main_kwargs.get("config", TINY), overrides)
      else:
        proc = run_main(workdir, *overrides, **run_main_kwargs)
        if proc.returncode != 0:
          raise RuntimeError(f"The shared run {name!r} failed:\n{proc.stderr[-4000:]}")
  return workdir


def _train_in_process(workdir, config_spec, overrides):
  """`python main.py --config=SPEC --workdir=WORKDIR --config.KEY=VALUE...`, in this process."""
  import ast  # pylint: disable=g-import-not-at-top
  from alexnet_jax import config_lib, train  # pylint: disable=g-import-not-at-top
  config = config_lib.load(str(REPO_ROOT / config_spec) if config_spec.startswith("configs/")
                           else config_spec)
  for override in overrides:
    key, _, raw = override[len("--config."):].partition("=")
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    try:
      node[leaf] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      node[leaf] = raw
  train.train_and_evaluate(config, str(workdir))


def final_params(workdir):
  """(step, params, meta) of a workdir's newest checkpoint, on the host."""
  from alexnet_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  step = ckpt.latest_step()
  params, _, meta = ckpt.restore(step, abstract_params=ckpt.stored_shapes(step))
  return step, jax.device_get(params), meta


def assert_bitwise_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def max_rel_diff(a, b):
  """Largest per-tensor relative difference ||x - y|| / ||y||.

  Element-wise ratios are meaningless for entries near zero, where a different
  summation order (another device or process count) shows up first.
  """
  return max(float(np.linalg.norm(x - y) / np.linalg.norm(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def write_sweep(path, grid_src, base="default:tiny", **config):
  """A sweep file on the tiny config (4 steps); `grid_src` is get_sweep's return expression."""
  sets = "".join(f"  c.{k} = {v!r}\n" for k, v in config.items())
  path.write_text(textwrap.dedent(f"""\
      from alexnet_jax import config_lib, sweep

      def get_config(arg=None):
        c = config_lib.load({base!r})
        c.num_train_steps = 4
        c.eval_every_steps = 4
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
      """) + sets + textwrap.dedent(f"""\
        return c

      def get_sweep(arg=None):
        return {grid_src}
      """))
  return str(path)
