"""The training loop: `train_and_evaluate(config, workdir)` is a whole run.

Start-up checks everything that could fail later (config, data, workdir,
checkpoints), then the loop trains, logs, evaluates exactly, adjusts the
learning rate on plateaus and saves. Rerunning the same command resumes from
the newest checkpoint, bit for bit; a finished run is not trained again, and a
stop signal saves first (`_StopSignals`). The loop reads metrics once per
logging window, one step late (`alexnet_jax.steps`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config_lib
from alexnet_jax import metrics as metrics_lib
from alexnet_jax import optim
from alexnet_jax import parallel
from alexnet_jax import runtime
from alexnet_jax import steps
from alexnet_jax import workdir as workdir_lib


# jax.transfer_guard of the loop after start-up. The tests set "disallow" (through the
# environment, so their training subprocesses too): an implicit host<->device transfer in
# the loop, a per-step sync, then fails them.
LOOP_TRANSFER_GUARD = os.environ.get("ALEXNET_JAX_LOOP_TRANSFER_GUARD", "allow")


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN/inf; the state is not checkpointed."""


class _StopSignals:
  """SIGTERM (cloud preemption) and Ctrl-C: finish the step, save, wait, exit.

  A second Ctrl-C exits at once; the newest complete checkpoint stays valid
  (Orbax finalises a step only when all of it is written).
  """

  def __init__(self):
    self.requested = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested is not None and signum == signal.SIGINT:
      logging.warning("Second Ctrl-C: exiting now without saving.")
      os._exit(130)  # pylint: disable=protected-access
    self.requested = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint and exiting (Ctrl-C again to abort).",
                    self.requested)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _enable_compilation_cache(directory: str) -> None:
  """XLA programs persist across runs, so a rerun skips most compilation."""
  if directory and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@dataclasses.dataclass
class _Plan:
  steps_per_epoch: int
  total_steps: int
  eval_every: int


def _plan(config, info) -> _Plan:
  steps_per_epoch = max(1, info.num_train_examples // config.batch_size)
  total = optim.total_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  return _Plan(steps_per_epoch, total, eval_every)


def _finished(workdir, total_steps) -> dict | None:
  """The final metrics of a run that already trained `total_steps` (or more), marked
  `already_finished`; else None."""
  done = workdir_lib.read_done(workdir)
  if done is None or done.get("step", -1) < total_steps:
    return None
  if done["step"] > total_steps:
    logging.warning("%s finished at step %d, past num_train_steps=%d: nothing to do (to "
                    "train longer, raise it).", workdir, done["step"], total_steps)
  else:
    logging.info("%s already finished at step %d: %s", workdir, done["step"],
                 {k: round(v, 4) for k, v in done.get("metrics", {}).items()
                  if isinstance(v, float)})
  return dict(done.get("metrics", {}), step=done["step"], already_finished=True)


class WindowClock:
  """Training time of a logging window: wall time less the evals and saves inside it.

  `with clock.paused():` brackets work that is not training. A pause that
  spans the end of a window (a save flushes the window it interrupts) counts
  only its part after the window's start, so a window is never charged twice.
  """

  def __init__(self, now=time.perf_counter):
    self._now = now
    self.start, self.paused_seconds = now(), 0.0

  @contextlib.contextmanager
  def paused(self):
    begin = self._now()
    try:
      yield
    finally:
      self.paused_seconds += self._now() - max(begin, self.start)

  def lap(self) -> float:
    """Seconds trained since the last lap (or creation); starts the next window."""
    now = self._now()
    elapsed = now - self.start - self.paused_seconds
    self.start, self.paused_seconds = now, 0.0
    return max(elapsed, 1e-9)


class TrainLog:
  """A run's metrics as the loop writes them: logging windows, written one step late (when
  the next step is queued behind them) and timed by a WindowClock, and eval results; keeps
  the latest value of each for the run's final metrics."""

  def __init__(self, writer, batch_size: int):
    self.writer, self.batch_size = writer, batch_size
    self.clock = WindowClock()
    self.final: dict[str, Any] = {}
    self._pending = None

  def queue(self, step, window):
    """Writes this window at the next `flush`, once the step after it is dispatched."""
    self._pending = (step, window)

  def flush(self):
    if self._pending is not None:
      (step, window), self._pending = self._pending, None
      self.write_window(step, window)

  def write_window(self, step, window):
    """Writes a logging window's metrics; raises if any of its steps was not finite."""
    window = jax.device_get(window)
    elapsed = self.clock.lap()
    if window["first_bad_step"] >= 0:
      raise NonFiniteLossError(
          f"Non-finite loss or gradient at step {int(window['first_bad_step'])} (checked at "
          f"step {step}). The last checkpoint is the last finite state. Likely causes: a "
          "learning rate too high for this batch size/schedule (try a lower "
          "--config.learning_rate or a warm-up), or corrupt input data.")
    summary = metrics_lib.summarize_train(window)
    summary["images_per_sec"] = float(window["num_steps"]) * self.batch_size / elapsed
    self.write(step, summary)

  def write(self, step, scalars):
    self.writer.write_scalars(step, scalars)
    self.final.update(scalars)


class _Run:
  """One training run's objects (model, optimiser, checkpoints, compiled steps, its
  TrainLog) and the named parts of its loop: restore or init, evaluate, save."""

  def __init__(self, config, workdir, mesh, info, plan):
    self.config, self.workdir, self.mesh, self.info, self.plan = config, workdir, mesh, info, plan
    self.num_classes = int(config.num_classes or info.num_classes)
    self.model = config_lib.create_model(config, self.num_classes)
    self.tx = optim.create_optimizer(config)
    self.flat_config = _flat(config_lib.to_dict(config))  # For trackers and hparams.
    self.log = TrainLog(metrics_lib.create_writer(workdir, config.writers, self.flat_config),
                        config.batch_size)
    ckpt_lib.write_replicated_arrays_once()  # An Orbax global: training runs only.
    self.ckpt = ckpt_lib.Checkpointer(workdir_lib.path(workdir) / workdir_lib.CHECKPOINT_DIR,
                                      keep=config.keep_checkpoints, keep_best=config.keep_best,
                                      best_metric=config.best_metric)
    self.abstract_state = steps.abstract_train_state(self.model, self.tx, config, mesh)
    # config.best_metric of the best saved checkpoints, best first (restored on resume).
    self.best_values: list[float] = []

  # ---- state ----
  def restore_or_init(self):
    restored = self.ckpt.restore_latest(abstract_params=self.abstract_state.params,
                                        abstract_opt_state=self.abstract_state.opt_state)
    if restored is None:
      state = steps.create_train_state(self.model, self.tx, self.config, self.mesh)
      logging.info("Initialised %s (%s parameters).", self.config.model.variant,
                   f"{sum(x.size for x in jax.tree.leaves(state.params)):,}")
      if jax.process_index() == 0:  # A run killed before its first checkpoint starts over.
        workdir_lib.repair_metrics(self.workdir, 0)
      return state
    params, opt_state, meta = restored
    replicated = parallel.replicated(self.mesh)
    plateau = jax.device_put(optim.PlateauState.from_dict(meta.get("plateau", {})), replicated)
    self.best_values = [float(v) for v in meta.get("best_values", [])]
    logging.info("Resumed from step %d in %s.", meta["step"], self.ckpt.directory)
    if jax.process_index() == 0:
      workdir_lib.repair_metrics(self.workdir, int(meta["step"]))
    return steps.TrainState(step=jax.device_put(jnp.int32(meta["step"]), replicated),
                            params=params, opt_state=opt_state, plateau=plateau)

  def compile(self):
    from alexnet_jax import data  # pylint: disable=g-import-not-at-top
    config, mesh = self.config, self.mesh
    train_augment, eval_crops, stored = data.device_preprocessing(config, self.info)
    lr_fn = optim.create_learning_rate_fn(config, self.plan.steps_per_epoch)
    train_step = steps.make_train_step(self.model, self.tx, lr_fn, config, mesh,
                                       self.abstract_state, device_augment=train_augment)
    self.train_step, self.compile_seconds = steps.compile_ahead_of_time(
        train_step, self.abstract_state, steps.abstract_window(mesh),
        steps.abstract_batch(config, mesh, stored_size=stored), name="train step")
    eval_step = steps.make_eval_step(self.model, config, mesh, self.abstract_state.params,
                                     device_crops=eval_crops)
    self.eval_step, eval_seconds = steps.compile_ahead_of_time(
        eval_step, self.abstract_state.params,
        steps.abstract_batch(config, mesh, eval_batch=True, stored_size=stored),
        steps.abstract_eval_totals(mesh), name="eval step")
    self.compile_seconds += eval_seconds
    self.plateau_step = steps.make_plateau_step(config)

  # ---- the parts of the loop ----
  def evaluate(self, state, step):
    jax.block_until_ready(state.params)  # The steps queued before it are training time.
    with self.log.clock.paused():
      return self._evaluate(state, step)

  def _evaluate(self, state, step):
    from alexnet_jax import data  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    total, num_batches = steps.eval_totals(self.mesh), 0
    ema = optim.ema_params(state.opt_state)  # Scored beside the params, in the same pass.
    ema_total = None if ema is None else steps.eval_totals(self.mesh)
    for batch in parallel.prefetch_to_mesh(data.create_eval_iterator(self.config), self.mesh,
                                           size=self.config.prefetch_batches):
      total = self.eval_step(state.params, batch, total)
      if ema is not None:
        ema_total = self.eval_step(ema, batch, ema_total)
      num_batches += 1
    if not num_batches:
      raise RuntimeError(f"The eval split {self.config.eval_split!r} of "
                         f"{self.config.dataset!r} is empty.")
    decays = int(jax.device_get(state.plateau.num_decays))
    state = self.plateau_step(state, total)
    result = metrics_lib.summarize_eval(jax.device_get(total))
    if ema is not None:
      result.update(metrics_lib.summarize_eval(jax.device_get(ema_total), prefix="ema_eval"))
    result["eval_time_sec"] = time.perf_counter() - start
    if int(jax.device_get(state.plateau.num_decays)) > decays:
      logging.info("Eval top-1 plateaued: learning rate scale now %g.",
                   float(jax.device_get(state.plateau.scale)))
    self.log.write(step, result)
    return state, result

  def save(self, state, step, window, *, eval_metrics=None, force=False):
    """Saves `state` once every step up to `step` is known to be finite."""
    jax.block_until_ready(state.params)  # The steps queued before it are training time.
    with self.log.clock.paused():
      self._save(state, step, window, eval_metrics=eval_metrics, force=force)

  def _save(self, state, step, window, *, eval_metrics, force):
    self.log.flush()
    bad = int(jax.device_get(window["first_bad_step"]))
    if bad >= 0:
      self.log.write_window(step, window)  # Raises NonFiniteLossError naming the step.
    metric = self.config.best_metric
    if eval_metrics is not None:
      self.best_values = ckpt_lib.best_first(self.best_values + [eval_metrics[metric]],
                                             metric)[:max(1, self.config.keep_best)]
    meta = {"config": config_lib.to_dict(self.config), "plateau": state.plateau.to_dict(),
            "best_values": self.best_values,
            "class_names": list(self.info.class_names or []), "num_classes": self.num_classes,
            "source": "train"}
    self.ckpt.save(step, params=state.params, opt_state=state.opt_state, meta=meta,
                   metrics={metric: eval_metrics[metric]} if eval_metrics else None,
                   force=force)
    self.log.writer.flush()  # What is logged up to a checkpoint is on disk with it.


def train_and_evaluate(config, workdir: str, *, hooks: Sequence[Callable[[int], Any]] = (),
                       save_hooks: Sequence[Callable[[int], Any]] = ()) -> dict[str, Any]:
  """Trains and evaluates; resumable. Returns the final metrics (also in metrics.jsonl).

  `hooks` run as hook(step) after each train step is dispatched, after the
  loop's own (progress reports, and the profiler when config.profile);
  `save_hooks` run as hook(step) once a checkpoint's save has started.
  """
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top

  mesh = parallel.create_mesh(model_parallel=config.parallelism.model)
  config_lib.validate(config, num_devices=mesh.shape[parallel.DATA_AXIS])
  if warning := runtime.precision_warning(config.half_precision):
    logging.warning("%s", warning)
  info = data.dataset_info(config)
  config = data.with_resolved_splits(config, info)
  plan = _plan(config, info)
  logging.info("Data: %s. %d steps per epoch, %d steps.", info.describe(), plan.steps_per_epoch,
               plan.total_steps)
  workdir_lib.check_resumable(workdir, config, info.identity())
  finished = _finished(workdir, plan.total_steps)
  if finished is not None:  # Even on a workdir that is read-only now.
    return finished
  workdir_lib.make_writable(workdir)
  lock = workdir_lib.Lock(workdir, command=f"training {config.model.variant}")
  if jax.process_index() == 0:
    lock.acquire()
  try:
    return _train(config, workdir, mesh, info, plan, hooks, save_hooks)
  finally:
    lock.release()


def _train(config, workdir, mesh, info, plan, hooks, save_hooks) -> dict[str, Any]:
  from alexnet_jax import data  # pylint: disable=g-import-not-at-top
  _enable_compilation_cache(config.compilation_cache_dir)
  run = _Run(config, workdir, mesh, info, plan)
  if jax.process_index() == 0:
    workdir_lib.check_free_space(run.ckpt.directory, sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(
            (run.abstract_state.params, run.abstract_state.opt_state))))
  state = run.restore_or_init()  # Refuses a checkpoint that does not fit before any write.
  if jax.process_index() == 0:
    workdir_lib.clear_done(workdir)
    workdir_lib.write_config(workdir, config, info.identity())
  step = start_step = int(jax.device_get(state.step))
  if start_step > plan.total_steps:
    logging.warning("%s holds step %d, past num_train_steps=%d: nothing to train.", workdir,
                    start_step, plan.total_steps)
    run.ckpt.close()
    return {"step": start_step}
  if start_step == 0:
    run.log.writer.write_hparams({k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                  for k, v in run.flat_config.items()})
  run.compile()
  total, log_every = plan.total_steps, config.log_every_steps
  window = jax.device_put(steps.empty_window(), parallel.replicated(mesh))
  train_iter = parallel.prefetch_to_mesh(
      data.create_train_iterator(config, start_step=start_step), mesh,
      size=config.prefetch_batches)
  hooks = [*_default_hooks(config, workdir, start_step, total), *hooks]
  multi_process = jax.process_count() > 1
  try:
    with _StopSignals() as stop, jax.transfer_guard(LOOP_TRANSFER_GUARD):
      if step == total:  # Killed after the final save, before done.json: evaluate it.
        state, eval_metrics = run.evaluate(state, step)
      while step < total:
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          state, window = run.train_step(state, window, next(train_iter))
        step += 1
        for hook in hooks:
          hook(step)
        run.log.flush()  # The previous window, now that this step is queued behind it.
        if step % log_every == 0 or step == total:
          run.log.queue(step, window)
        eval_metrics = None
        if step % plan.eval_every == 0 or step == total:
          run.log.flush()
          state, eval_metrics = run.evaluate(state, step)
        preempted = stop.requested is not None or (
            multi_process and run.ckpt.reached_preemption(step))
        # Saved: every checkpoint_every_steps, at the end, on a stop signal, and at
        # an eval that enters the best keep_best saved (so the best checkpoints are kept).
        improved = eval_metrics is not None and ckpt_lib.enters_best(
            run.best_values, eval_metrics[config.best_metric], config.best_metric,
            config.keep_best)
        if improved or step % config.checkpoint_every_steps == 0 or step == total or preempted:
          run.save(state, step, window, eval_metrics=eval_metrics, force=preempted)
          for hook in save_hooks:
            hook(step)
        if preempted:
          run.ckpt.wait()
          logging.warning("Saved step %d after %s; exiting. Rerun the same command to resume.",
                          step, stop.requested or "a preemption notice")
          break
      run.log.flush()
  finally:
    # Saves already started hold finite states: let them land even when the
    # loop leaves on an error.
    run.ckpt.wait()
    run.ckpt.close()
    run.log.writer.close()
  final = dict(run.log.final, step=step, compile_time_sec=run.compile_seconds)
  if step == total and jax.process_index() == 0:
    workdir_lib.write_done(workdir, step, total, final)
  return final


def _default_hooks(config, workdir, start_step, total):
  """A progress line every 30 s; a profiler trace of a few steps with config.profile."""
  hooks = [_Progress(start_step, total)]
  if config.profile and jax.process_index() == 0:
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top  (imports TF)
    hooks.append(periodic_actions.Profile(logdir=str(workdir), num_profile_steps=5,
                                          first_profile=min(start_step + 10, total)))
  return hooks


class _Progress:
  """A hook: a progress line every ~30 s with step, percent, steps/s and a steady ETA.

  (clu's ReportProgress would import TensorFlow into runs that never need it.)
  """

  def __init__(self, start_step, total, every_seconds=30.0):
    self.start_step, self.total, self.every = start_step, total, every_seconds
    self.start = self.last = time.perf_counter()

  def __call__(self, step):
    now = time.perf_counter()
    if now - self.last < self.every or step == self.total:
      return
    self.last = now
    rate = (step - self.start_step) / max(now - self.start, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    logging.info("step %d/%d (%.0f%%), %.2f steps/s, ETA %dm%02ds", step, self.total,
                 100.0 * step / self.total, rate, eta // 60, eta % 60)


def _flat(d):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.flatten_dict(d, sep=".")
