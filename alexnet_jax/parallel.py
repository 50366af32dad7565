"""Device mesh, global arrays and host→device prefetch.

The mesh spans every device of every process: batches are split over `"data"`, and
towers (if any) over `"model"`. Each process produces only its slice of the global
batch, assembled with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"


def create_mesh(devices=None, *, model_parallel: int = 1) -> Mesh:
  """The device mesh over `devices` (default: all devices of all processes).

  `model_parallel == 1`: a 1-D `"data"` mesh. Otherwise a 2-D
  `("data", "model")` mesh whose `"model"` axis holds the paper's towers
  (alexnet_jax/models/towers.py); neighbouring devices form a tower group, so tower
  traffic stays on the fastest links.

  Axis types `Explicit`: shard_map gets the specs it is given; nothing is
  resharded behind our back.
  """
  devices = jax.devices() if devices is None else list(devices)
  if model_parallel == 1:
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Explicit,),
                         devices=devices)
  if model_parallel < 1 or len(devices) % model_parallel:
    raise ValueError(
        f"config.parallelism.model={model_parallel} must be >= 1 and divide the device count "
        f"{len(devices)}.")
  return jax.make_mesh((len(devices) // model_parallel, model_parallel), (DATA_AXIS, MODEL_AXIS),
                       axis_types=(AxisType.Explicit, AxisType.Explicit), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of a batch into global arrays split over `"data"`."""
  sharding = data_sharded(mesh)
  # The step's one transfer, on purpose; with several processes JAX counts it as implicit,
  # which the training loop's transfer guard would refuse.
  with jax.transfer_guard_host_to_device("allow"):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree on every device of the mesh (the same value everywhere)."""
  return jax.device_put(tree, replicated(mesh))


def prefetch_to_mesh(batches: Iterable[dict[str, np.ndarray]], mesh: Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Yields global arrays, keeping `size` batches in flight on the devices.

  Transfers are asynchronous, so while the step for batch t runs, batches
  t+1..t+size are already being copied: host-to-device time hides behind
  compute. An iterator that sets `reusable_batches` (fake data) yields the
  same few batch objects again and again: each is copied once and then reused
  from the devices.
  """
  cache = {} if getattr(batches, "reusable_batches", False) else None

  def transfer(batch):
    if cache is None:
      return to_global(batch, mesh)
    key = id(batch)
    if key not in cache:
      cache[key] = to_global(batch, mesh)
    return cache[key]

  queue = collections.deque()
  it = iter(batches)
  for batch in itertools.islice(it, max(1, size)):
    queue.append(transfer(batch))
  while queue:
    yield queue.popleft()
    for batch in itertools.islice(it, 1):
      queue.append(transfer(batch))
