"""Process start-up: logging, TensorFlow off the accelerators, jax.distributed, topology.

Under SLURM, JAX's own cluster detection gives each process the one GPU
numbered SLURM_LOCALID, which is wrong both for one task per node (it would use
1 of 8 GPUs) and where SLURM already narrowed CUDA_VISIBLE_DEVICES to the task's
GPU; `slurm_local_device_ids` decides instead.

A multi-process job first meets at the coordinator's address in a small
rendezvous of its own, so that a process that never starts, or a port that is
already taken, is named in one line instead of JAX aborting minutes later
with "another task died".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import struct
import sys
import time

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


def _is_local(host: str) -> bool:
  return host in ("localhost", "127.0.0.1", "::1", socket.gethostname())


def default_initialization_timeout(coordinator_address: str | None) -> int:
  """Seconds to wait for every process: short when they all run on this host."""
  host = (coordinator_address or "").rsplit(":", 1)[0]
  return 60 if coordinator_address and _is_local(host) else 300


def rendezvous(coordinator_address: str, num_processes: int, process_id: int,
               timeout: float) -> None:
  """Every process checks in at the coordinator's port before JAX starts there.

  Process 0 listens and names any process that has not arrived after
  `timeout` seconds; the others say when process 0 cannot be reached. A port
  already in use is reported as such.
  """
  host, port = coordinator_address.rsplit(":", 1)
  port = int(port)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      server.bind(("", port))
    except OSError as e:
      raise StartupError(
          f"Port {port} of --coordinator_address={coordinator_address} is already in use on "
          f"this host ({e.strerror}): another job, or a stale process of this one, holds it. "
          "Pick another port, or stop that process.") from e
    server.listen(num_processes)
    joined = {}
    try:
      while len(joined) < num_processes - 1:
        server.settimeout(max(0.1, deadline - time.monotonic()))
        try:
          conn, _ = server.accept()
        except socket.timeout:
          missing = sorted(set(range(1, num_processes)) - set(joined))
          raise StartupError(
              f"Process(es) {missing} of {num_processes} did not join at "
              f"{coordinator_address} within {timeout:.0f} s (--initialization_timeout). "
              "Start every process with the same --coordinator_address and --num_processes "
              f"and its own --process_id in 0..{num_processes - 1}.") from None
        conn.settimeout(10)
        (peer,) = struct.unpack("!i", conn.recv(4))
        joined[peer] = conn
      for conn in joined.values():
        conn.sendall(b"go")
      for conn in joined.values():  # Let the peers close first: the port stays free of
        conn.recv(1)                # TIME_WAIT sockets for JAX's coordinator to bind.
        conn.close()
    finally:
      server.close()
    return
  while True:
    try:
      with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(struct.pack("!i", process_id))
        conn.settimeout(max(1.0, deadline - time.monotonic()) + 5)
        if conn.recv(2) == b"go":
          return
    except OSError:
      pass
    if time.monotonic() > deadline:
      raise StartupError(
          f"Process {process_id} could not reach process 0 at {coordinator_address} within "
          f"{timeout:.0f} s (--initialization_timeout): is process 0 running, with the same "
          "--coordinator_address, and is the address reachable from here?")
    time.sleep(0.5)


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
    if num_processes > 1:
      rendezvous(coordinator_address, num_processes, process_id, timeout)
    # CPU-only jobs need a collectives backend across processes; it touches only
    # the CPU client, so it is harmless on GPU/TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=device_ids,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=int(timeout))
  elif auto:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(local_device_ids=device_ids,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=int(timeout))
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
