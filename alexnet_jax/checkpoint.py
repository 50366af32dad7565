"""Orbax checkpoints: params, optimiser state and a JSON `meta` item per step.

Layout and why the items are separate: docs/design.md, "The workdir". Saves are
asynchronous and atomic (Orbax renames a complete temporary directory), so a run
killed mid-save leaves the previous step as the newest complete one. Retention: the
newest `keep` steps plus the `keep_best` best by `best_metric` (a metric ending in
`loss` is best when lowest, any other when highest). Restores use abstract targets
carrying the *current* shardings, so a checkpoint written on 8 devices restores on
one CPU and vice versa.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from alexnet_jax import workdir as workdir_lib

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
  """A checkpoint is missing, unreadable, or does not fit the model being restored."""


class UnreadableCheckpointError(RuntimeError):
  """A step's files are damaged or incomplete (restore_latest falls back past it)."""


def shape_differences(expected, stored) -> list[str]:
  """Human-readable list of leaves whose shape differs or that exist on one side only."""
  exp = {jax.tree_util.keystr(p): tuple(v.shape)
         for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {jax.tree_util.keystr(p): tuple(v.shape)
         for p, v in jax.tree_util.tree_flatten_with_path(stored)[0]}
  diffs = []
  for key in sorted(exp.keys() | got.keys()):
    if key not in got:
      diffs.append(f"{key}: expected {exp[key]}, missing from the checkpoint")
    elif key not in exp:
      diffs.append(f"{key}: in the checkpoint {got[key]}, not in the model")
    elif exp[key] != got[key]:
      diffs.append(f"{key}: model expects {exp[key]}, checkpoint has {got[key]}")
  return diffs


@contextlib.contextmanager
def _without_expected_notices():
  """Orbax warns whenever a checkpoint is opened read-only (for us the normal case) and
  when a type handler is replaced (ours, on purpose: `write_replicated_arrays_once`)."""
  notices = ("Given directory is read only", "CheckpointManagerOptions.read_only=True",
             "Type handler registry type")

  def drop(record):
    return not str(record.msg).startswith(notices)

  logging.getLogger("absl").addFilter(drop)
  try:
    yield
  finally:
    logging.getLogger("absl").removeFilter(drop)


def _os_error(error: BaseException | None) -> OSError | None:
  """The OSError behind an exception (orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error
    error = error.__cause__ or error.__context__
  return None


def write_replicated_arrays_once() -> None:
  """Single-process training writes each replicated array from one replica.

  Orbax's default splits a replicated array over its replicas so that several
  hosts share the writing. In a single process every replica lives here, so
  the split only adds a slice program to compile for each array shape: 0.8 of
  the 4.7 CPU-seconds of a 4-step `default:tiny` run on a 2-core CPU machine.
  The files written are the same. Orbax keeps its type handlers in one
  process-wide registry: the training loop calls this; nothing else changes it.
  """
  if jax.process_count() != 1:
    return
  # Orbax's own default store of per-array metadata (pinned orbax-checkpoint 0.12.8).
  from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
  with _without_expected_notices():
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=False, array_metadata_store=array_metadata_store.Store()),
        override=True)


def lower_is_better(metric: str) -> bool:
  return metric.endswith("loss")


def best_first(values, metric: str) -> list[float]:
  return sorted(values, reverse=not lower_is_better(metric))


def enters_best(best_values, value, metric: str, keep_best: int) -> bool:
  """Whether `value` would be among the `keep_best` best of `best_values` (best first)."""
  if keep_best < 1:
    return False
  if len(best_values) < keep_best:
    return True
  worst = best_values[keep_best - 1]
  return value < worst if lower_is_better(metric) else value > worst


class Checkpointer:
  """A thin policy layer over `ocp.CheckpointManager` for this project's items."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False, keep_best: int = 1, best_metric: str = "eval_top1"):
    self.directory = workdir_lib.absolute(directory)
    self._read_only = read_only
    self._last_started = None
    policy = ocp_managers.AnyPreservationPolicy([
        ocp_managers.LatestN(n=max(1, int(keep))),
        ocp_managers.BestN(get_metric_fn=lambda m: m[best_metric], n=int(keep_best),
                           reverse=lower_is_better(best_metric),
                           keep_checkpoints_without_metrics=False),
    ])
    # Handlers are named up front so a fresh manager (a resumed run, a
    # notebook) can read item metadata before anything was saved through it.
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "opt_state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    with _without_expected_notices():
      options = ocp.CheckpointManagerOptions(
          preservation_policy=policy, enable_async_checkpointing=async_save,
          create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only)
      self._manager = ocp.CheckpointManager(self.directory, item_handlers=handlers,
                                            options=options)

  # ---- queries ----
  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def read_meta(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
      raise CheckpointError(
          f"Checkpoint step {step} in {self.directory} has format_version={version!r}; this "
          f"alexnet_jax reads version {FORMAT_VERSION}. Re-export it with the version that wrote it.")
    return meta

  def stored_shapes(self, step: int, item: str = "params"):
    """The stored tree of `item` as ShapeDtypeStructs on this process's first device.

    No array is read; the tree restores on this machine whatever topology wrote it.
    """
    meta = self._manager.item_metadata(step)[item]
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
                        getattr(meta, "tree", meta))

  # ---- save ----
  def save(self, step: int, *, params, opt_state=None, meta: dict[str, Any],
           metrics: dict[str, float] | None = None, force: bool = False) -> bool:
    """Starts an asynchronous save of `step`; returns whether a save was started."""
    meta = dict(meta, format_version=FORMAT_VERSION, step=int(step))
    items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    try:
      started = self._manager.save(int(step), args=ocp.args.Composite(**items),
                                   metrics=metrics, force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e
    if started:
      self._last_started = int(step)
    return started

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk (raises if one failed)."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(None, e) from e

  def _save_error(self, step, error) -> "CheckpointError":
    """A save failed (often: disk full). Say so, with what is still safe on disk."""
    try:
      free = shutil.disk_usage(self.directory).free
      space = f"{free / 2**20:.1f} MiB free on that file system"
    except (OSError, TypeError, ValueError):  # Not a local file system.
      space = "free space unknown"
    try:
      self._manager.reload()
      intact = self.all_steps()
    except Exception:  # pylint: disable=broad-except
      intact = "unknown"
    # An asynchronous save that failed in the background surfaces at the next
    # save or wait; name both steps so the message points at the right one.
    which = f"step {self._last_started}" if self._last_started is not None else "a checkpoint"
    if step is not None and step != self._last_started:
      which += f" (noticed when starting step {step})"
    cause = _os_error(error) or error  # Quote the OSError behind Orbax's wrappers.
    what = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:300]}"
    return CheckpointError(
        f"Saving {which} to {self.directory} failed: {what} ({space}). Complete earlier "
        f"checkpoints: {intact}. Fix the cause (or point --workdir elsewhere) and rerun the "
        "same command to resume from the newest of them.")

  def close(self) -> None:
    self._manager.close()

  # ---- restore ----
  def _read(self, step: int, read):
    """read() through Orbax; any failure means the step's files are damaged or missing."""
    try:
      return read()
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (damaged files: many kinds)
      raise UnreadableCheckpointError(
          f"Checkpoint step {step} in {self.directory} is unreadable ({type(e).__name__}: "
          f"{(str(e).splitlines() or [''])[0][:200]})") from e

  def restore(self, step: int, *, abstract_params, abstract_opt_state=None):
    """Restores one step into the given abstract targets (their shardings win).

    `abstract_params` is the target tree, or fn(meta, stored params shapes) ->
    tree for a caller that rebuilds the model from the step's own config.
    Returns (params, opt_state or None, meta). Shapes are compared with the
    stored metadata first, so a checkpoint of another variant or class count
    gets an error listing the differing leaves.
    """
    meta = self._read(step, lambda: self.read_meta(step))
    stored = self._read(step, lambda: self.stored_shapes(step, "params"))
    if not jax.tree.leaves(stored):
      raise UnreadableCheckpointError(
          f"Checkpoint step {step} in {self.directory} has no readable params metadata")
    if callable(abstract_params):
      abstract_params = abstract_params(meta, stored)
    if callable(abstract_opt_state):  # fn(abstract params) -> target
      abstract_opt_state = abstract_opt_state(abstract_params)
    diffs = shape_differences(abstract_params, stored)
    if diffs:
      raise CheckpointError(
          f"Checkpoint step {step} in {self.directory} does not fit this model "
          f"(it was written for variant {meta.get('config', {}).get('model', {}).get('variant')!r} "
          f"with {meta.get('num_classes')} classes). Differences:\n  " + "\n  ".join(diffs[:20])
          + ("\n  ..." if len(diffs) > 20 else ""))
    items = {"params": ocp.args.StandardRestore(abstract_params)}
    if abstract_opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    restored = self._read(step, lambda: self._manager.restore(
        step, args=ocp.args.Composite(**items)))
    opt_state = restored["opt_state"] if abstract_opt_state is not None else None
    return restored["params"], opt_state, meta

  def restore_latest(self, *, abstract_params, abstract_opt_state=None, step=None):
    """Restores the newest readable step (or `step` alone), falling back past unreadable ones.

    The one restore path of training and inference (targets as in `restore`).
    A step that fails to read (truncated or missing files) is reported with a
    warning naming it and skipped. It is never deleted: a writable manager
    moves it to `<checkpoints>_quarantine/` so the resumed run can save that
    step number again and retention never counts it. A step that does not fit
    the model is an error: falling back would silently train something else.
    Returns None when there is no checkpoint at all.
    """
    steps = self.all_steps()
    if not steps:
      return None
    if step is not None and int(step) not in steps:
      raise CheckpointError(f"Step {step} is not in {self.directory}; available steps: {steps}.")
    bad = []
    for candidate in [int(step)] if step is not None else reversed(steps):
      try:
        restored = self.restore(candidate, abstract_params=abstract_params,
                                abstract_opt_state=abstract_opt_state)
      except UnreadableCheckpointError as e:
        if step is not None:
          raise CheckpointError(f"{e}; available steps: {steps}.") from e
        logging.warning("%s; trying the previous one.", e)
        bad.append(candidate)
        continue
      if bad:
        logging.warning("Using checkpoint step %d: the newer step(s) %s are unreadable.",
                        candidate, bad)
        self._quarantine(bad)
      return restored
    raise CheckpointError(
        f"None of the checkpoints {steps} in {self.directory} could be restored; see the "
        "warnings above. Move the directory away to start from scratch.")

  def _quarantine(self, steps) -> None:
    """Moves unreadable steps aside (never deletes them), process 0 only."""
    if self._read_only:
      return
    if jax.process_index() == 0:
      target_root = self.directory.parent / (self.directory.name + "_quarantine")
      target_root.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target = target_root / f"{step}.{int(time.time())}"
        (self.directory / str(step)).rename(target)
        logging.warning("Moved unreadable checkpoint step %d to %s for inspection.", step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("alexnet_jax_checkpoint_quarantine")
    self._manager.reload()
