"""Start-up under SLURM and on machines where the accelerator is missing.

`slurm_local_device_ids` is tested on SLURM environments as dicts; the start-up test runs
`runtime.initialize(auto=True)` through JAX's real cluster detection
(jax._src.distributed.State.initialize) with only the coordinator service faked, and reads
what it leaves in `jax_cuda_visible_devices`.
"""

import logging
import os

import jax
from jax._src import distributed
import pytest

from alexnet_jax import runtime

GPUS = "0,1,2,3,4,5,6,7"


def _slurm(ntasks, tasks_per_node, local_id, **extra):
  return {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[01-02]",
          "SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(local_id), "SLURM_NODEID": "0",
          "SLURM_LOCALID": str(local_id), "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, **extra}


# `srun` with --ntasks-per-node=1 --gpus-per-node=8: one task sees all 8 GPUs.
TASK_PER_NODE = _slurm(2, "1(x2)", 0, SLURM_GPUS_ON_NODE="8", SLURM_STEP_GPUS=GPUS,
                       CUDA_VISIBLE_DEVICES=GPUS)
# --ntasks-per-node=8 --gpus-per-task=1: SLURM narrowed task 5's list to its GPU, "5".
TASK_PER_GPU_NARROWED = _slurm(16, "8(x2)", 5, SLURM_GPUS_ON_NODE="8", SLURM_STEP_GPUS=GPUS,
                               CUDA_VISIBLE_DEVICES="5")


@pytest.mark.parametrize("env, expected", [
    (TASK_PER_NODE, list(range(8))),
    (TASK_PER_GPU_NARROWED, [0]),
    # One task per GPU, every task seeing all 8: task 5 takes GPU 5 (JAX's own choice).
    (_slurm(16, "8(x2)", 5, SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES=GPUS), [5]),
    # Two tasks of 4 GPUs: their halves of 8 shared GPUs, or all 4 of a narrowed list.
    (_slurm(4, "2(x2)", 1, SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES=GPUS), [4, 5, 6, 7]),
    (_slurm(4, "2(x2)", 1, SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="4,5,6,7"), [0, 1, 2, 3]),
    # Only the job-level variables (no SLURM_STEP_*), and SLURM_JOB_GPUS for the count.
    ({**_slurm(16, "x", 3, SLURM_TASKS_PER_NODE="8(x2)", SLURM_JOB_GPUS=GPUS),
      "CUDA_VISIBLE_DEVICES": "3"}, [0]),
    # Heterogeneous nodes: this is node 1, with 4 tasks on 8 unnarrowed GPUs.
    (_slurm(12, "8,4", 3, SLURM_NODEID="1", CUDA_VISIBLE_DEVICES=GPUS), [6, 7]),
    # GPUs that SLURM does not manage (no CUDA_VISIBLE_DEVICES): all of them for one task
    # ([] leaves JAX's "all"), one per task otherwise, as JAX would.
    (_slurm(2, "1(x2)", 0), []),
    (_slurm(2, "2", 1), [1]),
])
def test_slurm_local_device_ids(env, expected):
  assert runtime.slurm_local_device_ids(env) == expected


@pytest.mark.parametrize("env", [
    {},  # Not SLURM.
    {"CUDA_VISIBLE_DEVICES": GPUS, "SLURM_GPUS_ON_NODE": "8"},
    {k: v for k, v in TASK_PER_NODE.items() if k != "SLURM_STEP_NODELIST"},  # JAX won't detect.
    {**TASK_PER_NODE, "JAX_LOCAL_DEVICE_IDS": "0,1"},  # The user's choice stands.
])
def test_no_override_outside_jax_slurm_detection(env):
  assert runtime.slurm_local_device_ids(env) is None


def test_shortfall_warning():
  assert "SLURM gave the node 8 GPUs" in runtime.slurm_shortfall_warning(TASK_PER_NODE, 1)
  assert runtime.slurm_shortfall_warning(TASK_PER_NODE, 8) is None
  assert runtime.slurm_shortfall_warning(TASK_PER_GPU_NARROWED, 1) is None  # 8 tasks x 1
  assert runtime.slurm_shortfall_warning({}, 0) is None


class _FakeCoordinator:
  """Stands in for jaxlib's distributed service, client and preemption manager."""

  def __getattr__(self, name):
    return lambda *args, **kwargs: self


@pytest.fixture
def srun_like(monkeypatch):
  """No SLURM variables of our own, no coordinator (JAX's real SLURM detection runs, its
  service and client are faked), and the JAX config that start-up changes restored after."""
  for key in list(os.environ):
    if key.startswith("SLURM_") or key in ("CUDA_VISIBLE_DEVICES", "JAX_LOCAL_DEVICE_IDS"):
      monkeypatch.delenv(key)
  monkeypatch.setattr(distributed, "_jax", _FakeCoordinator())
  calls = []

  def initialize(**kwargs):  # jax.distributed.initialize less its backends-started check.
    calls.append(kwargs)
    distributed.State().initialize(**kwargs)

  monkeypatch.setattr(jax.distributed, "initialize", initialize)
  monkeypatch.setattr(runtime, "_cpu_asked_for", lambda platforms=None: False)
  saved = {flag: jax.config.read(flag)
           for flag in ("jax_cuda_visible_devices", "jax_rocm_visible_devices")}
  saved["jax_cpu_collectives_implementation"] = jax.config.jax_cpu_collectives_implementation
  yield calls
  for flag, value in saved.items():
    jax.config.update(flag, value)


@pytest.mark.parametrize("env, jax_alone, ours", [
    (TASK_PER_NODE, "0", GPUS),          # JAX alone: 1 GPU of 8.
    (TASK_PER_GPU_NARROWED, "5", "0"),   # JAX alone: GPU 5 of a 1-GPU list, i.e. none.
])
def test_srun_startup_sets_visible_devices(srun_like, monkeypatch, caplog, env, jax_alone,
                                           ours):
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  # JAX's own detection (the bug this guards against); should a JAX upgrade change it,
  # `slurm_local_device_ids` may no longer be needed.
  distributed.State().initialize()
  assert jax.config.read("jax_cuda_visible_devices") == jax_alone

  jax.config.update("jax_cuda_visible_devices", "all")
  caplog.set_level(logging.INFO)
  runtime.initialize(auto=True)
  assert jax.config.read("jax_cuda_visible_devices") == ours
  ids = [int(i) for i in ours.split(",")]
  assert srun_like[-1]["local_device_ids"] == ids
  lines = [r.getMessage() for r in caplog.records if r.pathname == runtime.__file__]
  assert sum(f"SLURM local_device_ids={ids}" in m for m in lines) == 1, lines
  # This CPU has no GPU: one warning line names the shortfall against SLURM's 8 GPUs.
  assert sum("SLURM gave the node 8 GPUs" in m for m in lines) == 1, lines


def test_missing_accelerator_warning():
  cuda = lambda name: object() if name == "jax_cuda12_plugin" else None
  warning = runtime.missing_accelerator_warning("cpu", "", find_spec=cuda)
  assert "jax_cuda12_plugin is installed but JAX runs on the CPU" in warning
  assert "nvidia-smi" in warning and 'jax[cuda12]' in warning
  tpu = lambda name: object() if name == "libtpu" else None
  assert 'jax[tpu]' in runtime.missing_accelerator_warning("cpu", "", find_spec=tpu)
  assert runtime.missing_accelerator_warning("gpu", "", find_spec=cuda) is None
  assert runtime.missing_accelerator_warning("cpu", "cpu", find_spec=cuda) is None  # Asked for.
  assert runtime.missing_accelerator_warning("cpu", "", find_spec=lambda name: None) is None


@pytest.mark.parametrize("half, backend, warns", [
    (False, "gpu", True), (False, "tpu", True), ("auto", "gpu", False), (True, "gpu", False),
    (False, "cpu", False), ("auto", "cpu", False),
])
def test_precision_warning(half, backend, warns):
  warning = runtime.precision_warning(half, backend)
  assert (warning is not None) == warns
  assert not warns or "float32 compute on " + backend in warning
