"""Process start-up: logging, TensorFlow off the accelerators, jax.distributed, topology.

Under SLURM, `slurm_local_device_ids` picks each process's GPUs instead of JAX's
detection, which gives every process only the GPU numbered SLURM_LOCALID.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import sys
import threading

import jax


def hide_accelerators_from_tensorflow() -> None:
  """tf.data runs on the host; a TF that grabs GPU memory starves JAX."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):
    pass


class _OurInfoAndEveryonesWarnings(logging.Filter):
  """INFO from alexnet_jax only; libraries (TFDS, Orbax, TensorStore) from WARNING up."""

  _PACKAGE = os.path.dirname(os.path.abspath(__file__))

  def filter(self, record):
    return record.levelno >= logging.WARNING or record.pathname.startswith(self._PACKAGE)


def quiet_library_logs() -> None:
  """Short console lines (`12:01:02 message`), and no library chatter at INFO."""
  quiet = _OurInfoAndEveryonesWarnings()
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    handler = absl_logging.get_absl_handler()
    handler.addFilter(quiet)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  except ImportError:
    pass
  for handler in logging.getLogger().handlers:
    handler.addFilter(quiet)
  global _libraries_quiet
  _libraries_quiet = True
  if "tensorflow_datasets" in sys.modules:
    quiet_tfds(sys.modules["tensorflow_datasets"])


_libraries_quiet = False


def quiet_tfds(tfds) -> None:
  """No TFDS progress bars once `quiet_library_logs` ran. Called where TFDS is imported,
  not here: runs on fake or prepared data never load it."""
  if _libraries_quiet:
    tfds.disable_progress_bar()


class StartupError(RuntimeError):
  """The job's processes could not meet."""


def default_initialization_timeout(coordinator_address: str | None) -> int:
  """Seconds to wait for every process: short when they all run on this host."""
  host = (coordinator_address or "").rsplit(":", 1)[0]
  local = host in ("localhost", "127.0.0.1", "::1", socket.gethostname())
  return 60 if coordinator_address and local else 300


def _start_distributed(timeout: int, **kwargs) -> None:
  """jax.distributed.initialize; a failure to meet ends in one line naming the coordinator.

  When the processes have not all met within its initialization_timeout, JAX
  aborts the process (a C++ check failure and a stack dump): a timer a little
  earlier says what happened first.
  """
  where = kwargs.get("coordinator_address") or "the cluster's coordinator"
  if kwargs.get("process_id") == 0:  # JAX may crash (SIGSEGV) when its port is taken.
    port = int(where.rsplit(":", 1)[1])
    with socket.socket() as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind(("", port))
      except OSError as e:
        raise StartupError(f"Port {port} of --coordinator_address={where} is already in use "
                           f"on this host: {e}") from e

  def give_up():
    sys.stderr.write(f"error: the processes did not all meet at {where} within {timeout} s "
                     "(--initialization_timeout): start each with the same --coordinator_address "
                     "and --num_processes and its own --process_id.\n")
    sys.stderr.flush()
    os._exit(2)

  timer = threading.Timer(timeout, give_up)
  timer.daemon = True
  timer.start()
  try:
    # CPU-only jobs need a collectives backend across processes; it touches only
    # the CPU client, so it is harmless on GPU/TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(initialization_timeout=int(timeout) + 10, **kwargs)
  except Exception as e:  # pylint: disable=broad-except  (e.g. the port is taken)
    raise StartupError(f"jax.distributed could not start at {where}: {e}") from e
  finally:
    timer.cancel()


# What jax's SlurmCluster.is_env_present() checks (jax/_src/clusters/slurm_cluster.py).
_SLURM_DETECTED_BY_JAX = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                          "SLURM_LOCALID")


def _this_nodes_count(value: str | None, node: int) -> int | None:
  """SLURM's per-node counts ("8", "8(x2),4") at this node's index."""
  counts = []
  for part in (value or "").split(","):
    match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
    if not match:
      return None
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts[min(node, len(counts) - 1)]


def _list_length(value: str | None) -> int | None:
  items = [x for x in (value or "").split(",") if x.strip() and x.strip() != "NoDevFiles"]
  return len(items) or None


def slurm_layout(env) -> tuple[int, int | None, int | None]:
  """(tasks on this node, GPUs SLURM gave this node, GPUs this process sees); None: unknown."""
  node = int(env.get("SLURM_NODEID", 0) or 0)
  tasks = next((n for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                              "SLURM_NTASKS_PER_NODE")
                if (n := _this_nodes_count(env.get(key), node))), None)
  tasks = tasks or int(env.get("SLURM_LOCALID", 0) or 0) + 1
  offered = (_list_length(env.get("SLURM_STEP_GPUS")) or _this_nodes_count(
      env.get("SLURM_GPUS_ON_NODE"), 0) or _list_length(env.get("SLURM_JOB_GPUS")))
  visible = _list_length(env.get("CUDA_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES")))
  return tasks, offered, visible


def slurm_local_device_ids(env) -> list[int] | None:
  """`local_device_ids` for jax.distributed.initialize: ordinals among the GPUs this process sees.

  None where JAX would not detect SLURM, or JAX_LOCAL_DEVICE_IDS is set: JAX's choice stands.
  One task per node: every GPU it sees ([] when SLURM does not say how many, which JAX takes
  as "all"). One task per GPU: [0] where SLURM narrowed CUDA_VISIBLE_DEVICES to the task's
  GPU(s) already, else this task's share of the node's GPUs by SLURM_LOCALID.
  """
  if any(key not in env for key in _SLURM_DETECTED_BY_JAX) or env.get("JAX_LOCAL_DEVICE_IDS"):
    return None
  tasks, offered, visible = slurm_layout(env)
  local_id = int(env["SLURM_LOCALID"])
  if tasks == 1:
    return list(range(visible or 0))
  if visible is None:  # GPUs not managed by SLURM: one per task, as JAX would.
    return [local_id]
  if visible < max(offered or 0, tasks):  # SLURM narrowed the list to this task's GPUs.
    return list(range(visible))
  share = visible // tasks
  return list(range(local_id * share, (local_id + 1) * share))


def slurm_shortfall_warning(env, accelerators: int) -> str | None:
  """Says so when this node's tasks together use fewer GPUs than SLURM gave the node."""
  tasks, offered, _ = slurm_layout(env)
  if not offered or accelerators * tasks >= offered:
    return None
  return (f"JAX uses {accelerators} accelerator(s) in each of the {tasks} task(s) on this node, "
          f"but SLURM gave the node {offered} GPUs: check --gpus-per-task / --ntasks-per-node "
          "and CUDA_VISIBLE_DEVICES, or set JAX_LOCAL_DEVICE_IDS.")


# Installed module -> what to check when JAX still runs on the CPU.
_ACCELERATOR_PLUGINS = {
    "jax_cuda12_plugin": 'nvidia-smi and the CUDA driver, or reinstall "jax[cuda12]"',
    "jax_cuda13_plugin": 'nvidia-smi and the CUDA driver, or reinstall "jax[cuda13]"',
    "jax_rocm7_plugin": 'rocm-smi and the ROCm driver, or reinstall "jax[rocm]"',
    "libtpu": 'that this is a TPU VM no other process holds, or reinstall "jax[tpu]"',
}


def _cpu_asked_for(platforms: str | None = None) -> bool:
  """JAX_PLATFORMS (jax_platforms) names no accelerator, e.g. `cpu`, as the test suite sets."""
  platforms = jax.config.jax_platforms if platforms is None else platforms
  return bool(platforms) and not re.search(r"cuda|gpu|rocm|tpu", platforms)


def missing_accelerator_warning(backend: str | None = None, platforms: str | None = None,
                                find_spec=importlib.util.find_spec) -> str | None:
  """Says why when a GPU/TPU plugin is installed but JAX fell back to the CPU."""
  if (backend or jax.default_backend()) != "cpu" or _cpu_asked_for(platforms):
    return None
  installed = [name for name in _ACCELERATOR_PLUGINS if find_spec(name) is not None]
  if not installed:
    return None
  return (f"{installed[0]} is installed but JAX runs on the CPU (so half_precision=auto means "
          f"float32): JAX found no usable device. Check {_ACCELERATOR_PLUGINS[installed[0]]} "
          "matching jax's version; JAX's own warning above says more.")


def precision_warning(half_precision, backend: str | None = None) -> str | None:
  """Says so when compute stays float32 on a GPU/TPU (as config_lib.compute_dtype resolves it)."""
  backend = backend or jax.default_backend()
  if backend == "cpu" or half_precision == "auto" or half_precision:
    return None
  return (f"half_precision={half_precision}: float32 compute on {backend}, several times slower "
          "than bfloat16; set --config.half_precision=auto unless this is deliberate.")


def initialize(*, coordinator_address=None, num_processes=None, process_id=None,
               auto: bool = False, heartbeat_timeout_seconds: int = 100,
               initialization_timeout: int | None = None) -> None:
  """Starts jax.distributed when asked to; otherwise runs a single process.

  Explicit flags win. `auto=True` lets JAX detect TPU pods and SLURM jobs; it is
  off by default so a laptop never waits on a coordinator that does not exist.
  Under SLURM the local devices are `slurm_local_device_ids`'s, not JAX's guess.
  """
  quiet_library_logs()
  explicit = coordinator_address is not None or num_processes is not None
  timeout = initialization_timeout or default_initialization_timeout(coordinator_address)
  device_ids = slurm_local_device_ids(os.environ)
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise StartupError("A multi-process job needs all of --coordinator_address, "
                         "--num_processes and --process_id.")
    if not 0 <= process_id < num_processes:
      raise StartupError(f"--process_id={process_id} must be in 0..{num_processes - 1}.")
    _start_distributed(timeout, coordinator_address=coordinator_address,
                       num_processes=num_processes, process_id=process_id,
                       local_device_ids=device_ids,
                       heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  elif auto:
    _start_distributed(timeout, local_device_ids=device_ids,
                       heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  local = jax.local_devices()
  chosen = (f"; SLURM local_device_ids={device_ids or 'all'}"
            if device_ids is not None and (explicit or auto) else "")
  logging.info("JAX process %d of %d; %d local / %d global devices (%s %s%s).",
               jax.process_index(), jax.process_count(), len(local), jax.device_count(),
               local[0].platform, ",".join(str(d.local_hardware_id) for d in local), chosen)
  if not _cpu_asked_for():
    accelerators = sum(d.platform != "cpu" for d in local)
    for warning in (missing_accelerator_warning(),
                    slurm_shortfall_warning(os.environ, accelerators)):
      if warning:
        logging.warning("%s", warning)
