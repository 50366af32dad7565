"""Process start-up: logging, TensorFlow off the accelerators, jax.distributed, topology.

A multi-process job first meets at the coordinator's address in a small
rendezvous of its own, so that a process that never starts, or a port that is
already taken, is named in one line instead of JAX aborting minutes later
with "another task died".
"""

from __future__ import annotations

import logging
import os
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


def initialize(*, coordinator_address=None, num_processes=None, process_id=None,
               auto: bool = False, heartbeat_timeout_seconds: int = 100,
               initialization_timeout: int | None = None) -> None:
  """Starts jax.distributed when asked to; otherwise runs a single process.

  Explicit flags win. `auto=True` lets JAX detect TPU pods and SLURM jobs; it is
  off by default so a laptop never waits on a coordinator that does not exist.
  """
  quiet_library_logs()
  explicit = coordinator_address is not None or num_processes is not None
  timeout = initialization_timeout or default_initialization_timeout(coordinator_address)
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
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=int(timeout))
  elif auto:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=int(timeout))
  logging.info("JAX process %d of %d; %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
