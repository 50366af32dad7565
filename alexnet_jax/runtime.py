"""Process start-up: keep TensorFlow off accelerators, start jax.distributed, log topology."""

from __future__ import annotations

import logging

import jax


def hide_accelerators_from_tensorflow() -> None:
  """tf.data runs on the host; a TF that grabs GPU memory starves JAX."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):
    pass


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter from Orbax/TensorStore internals (dozens of lines per save)."""

  _NOISY = ("/orbax/", "/tensorstore/", "/etils/")

  def filter(self, record):
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in self._NOISY)


def quiet_library_logs() -> None:
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  except ImportError:
    pass
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())


def initialize(*, coordinator_address=None, num_processes=None, process_id=None,
               auto: bool = False, heartbeat_timeout_seconds: int = 100,
               initialization_timeout: int = 300) -> None:
  """Starts jax.distributed when asked to; otherwise runs a single process.

  Explicit flags win. `auto=True` lets JAX detect TPU pods and SLURM jobs; it is
  off by default so a laptop never waits on a coordinator that does not exist.
  """
  hide_accelerators_from_tensorflow()
  quiet_library_logs()
  explicit = coordinator_address is not None or num_processes is not None
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ValueError("A multi-process job needs all of --coordinator_address, "
                       "--num_processes and --process_id.")
    # CPU-only jobs need a collectives backend across processes; this setting
    # touches only the CPU client, so it is harmless on GPU/TPU. (Querying the
    # backend here would initialise it before jax.distributed, which is an error.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=initialization_timeout)
  elif auto:
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               initialization_timeout=initialization_timeout)
  logging.info("JAX process %d of %d; %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
