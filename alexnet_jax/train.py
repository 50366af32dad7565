"""Train state, the sharded train/eval steps, and the training loop.

The steps are per-device programs under `jax.jit(jax.shard_map(...))` on the
1-D `"data"` mesh: the state is replicated, each device sees its slice of the
global batch, gradients are averaged with `lax.pmean`, and metrics leave as
(sum, count) pairs added with `lax.psum`. `check_vma=False` keeps shard_map's
autodiff from inserting its own cross-device sum into the gradient (with it, a
further pmean would scale gradients by the device count).

`train_and_evaluate(config, workdir)` is the whole run: resume from the newest
checkpoint, ahead-of-time compile, train, log, evaluate exactly, checkpoint,
and save-and-exit on SIGTERM.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import periodic_actions
from jax import lax
from jax.sharding import PartitionSpec as P

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config_lib
from alexnet_jax import cpu_kernels
from alexnet_jax import faults
from alexnet_jax import metrics as metrics_lib
from alexnet_jax import optim
from alexnet_jax import parallel
from alexnet_jax import towers as towers_lib
from alexnet_jax.parallel import DATA_AXIS, MODEL_AXIS


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


# Written to the workdir (process 0) when a run has trained all its steps and
# evaluated the last one; removed when a run starts. Sweeps and scripts test
# for it instead of parsing the logs.
DONE_FILE = "done.json"


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN/inf; the state is not checkpointed."""


# --------------------------------------------------------------------------- steps


def normalize_images(images, mean_rgb, std_rgb):
  """uint8 (or [0,255] float) RGB → float32 standardised per channel.

  Done on the device: uint8 crosses the host→device link at a quarter of the
  bytes of float32. `mean_rgb`/`std_rgb` are on the [0, 1] scale.
  """
  mean = jnp.asarray(mean_rgb, jnp.float32) * 255.0
  std = jnp.asarray(std_rgb, jnp.float32) * 255.0
  return (images.astype(jnp.float32) - mean) / std


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy with optional label smoothing."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return optax.softmax_cross_entropy(logits, targets)


def topk_correct(scores, labels, k: int):
  """1.0 where the label is among the k highest scores, else 0.0."""
  k = min(k, scores.shape[-1])
  _, top = lax.top_k(scores, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def device_dropout_key(root, step, towers: int = 1):
  """This device's dropout key at `step` (call inside shard_map over `"data"`).

  Different units are dropped on every device and every step, and the key is a
  function of the step alone, so a resumed run draws the same masks. With
  towers, each tower drops its own half of the units independently.
  """
  key = jax.random.fold_in(jax.random.fold_in(root, step), lax.axis_index(DATA_AXIS))
  if towers > 1:
    key = jax.random.fold_in(key, lax.axis_index(MODEL_AXIS))
  return key


def num_towers(mesh) -> int:
  return mesh.shape[MODEL_AXIS] if MODEL_AXIS in mesh.axis_names else 1


def state_partition_specs(state, mesh):
  """How each leaf of the train state is laid out over the mesh's `"model"` axis.

  Data parallelism replicates everything (P()); tower parallelism splits the
  params and the optimiser state's arrays on their output axis.
  """
  if num_towers(mesh) == 1:
    return jax.tree.map(lambda _: P(), state)
  return TrainState(step=P(), params=towers_lib.partition_specs(state.params),
                    opt_state=towers_lib.partition_specs(state.opt_state))


def state_shardings(state, mesh):
  return jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec),
                      state_partition_specs(state, mesh),
                      is_leaf=lambda x: isinstance(x, P))


def _global_norm(tree, towers):
  """The norm of a tree whose leaves may be split over the towers."""
  sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))
  if towers > 1:
    sq = lax.psum(sq, MODEL_AXIS)
  return jnp.sqrt(sq)


def step_model(model, mesh):
  """The per-device network: the model itself, or one tower of it."""
  n = num_towers(mesh)
  return model if n == 1 else towers_lib.create_tower_model(model, n)


def _compiler_options(model) -> dict:
  """XLA:CPU options for the model's `cpu_kernels` setting ({} off the CPU)."""
  return cpu_kernels.compiler_options(getattr(model, "cpu_kernels", "off"))


def make_train_step(model, tx, learning_rate_fn: Callable, config, mesh, abstract_state=None):
  """Returns jitted `(state, batch, lr_scale) -> (state, metrics)`; the state is donated.

  `abstract_state` (shapes only) is needed with tower parallelism, to lay the
  state out over the `"model"` axis.
  """
  dropout_root = jax.random.fold_in(jax.random.key(config.seed), 0x0D0)
  label_smoothing = float(config.label_smoothing)
  towers = num_towers(mesh)
  net = step_model(model, mesh)

  def per_device(state: TrainState, batch, lr_scale):
    step = state.step
    key = device_dropout_key(dropout_root, step, towers)
    images = normalize_images(batch["image"], config.mean_rgb, config.std_rgb)
    labels = batch["label"]

    def loss_fn(params):
      logits = net.apply({"params": params}, images, train=True, rngs={"dropout": key})
      logits = logits.astype(jnp.float32)
      losses = cross_entropy(logits, labels, label_smoothing)
      # Each tower computes the same loss; the gathers' backward adds their
      # cotangents, so scale by 1/towers to get the single-device gradient.
      return losses.mean() / towers, (losses, logits)

    grads, (losses, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, DATA_AXIS)
    lr = learning_rate_fn(step) * lr_scale
    opt_state = optim.with_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sums = {
        "loss_sum": losses.sum(),
        "top1_sum": (jnp.argmax(logits, -1) == labels).astype(jnp.float32).sum(),
        "count": jnp.asarray(labels.shape[0], jnp.float32),
    }
    sums = lax.psum(sums, DATA_AXIS)
    sums["grad_norm"] = _global_norm(grads, towers)
    # Non-finite updates (e.g. a NaN learning rate) poison params while this
    # step's loss and gradient are still finite: check them too.
    sums["update_norm"] = _global_norm(updates, towers)
    sums["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return state.replace(step=step + 1, params=params, opt_state=opt_state), sums

  if towers > 1 and abstract_state is None:
    raise ValueError("Tower parallelism needs abstract_state to lay out the train state.")
  specs = (state_partition_specs(abstract_state, mesh) if abstract_state is not None
           else P())
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(specs, P(DATA_AXIS), P()),
                          out_specs=(specs, P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,), compiler_options=_compiler_options(model))


def make_eval_step(model, config, mesh, abstract_params=None):
  """Returns jitted `(params, batch) -> sums` over a padded, masked batch.

  With 10 crops (`image` of shape [B, 10, S, S, 3]) the softmax outputs of the
  crops are averaged, as in the paper, and loss/accuracy are those of the mean.
  """

  net = step_model(model, mesh)

  def per_device(params, batch):
    images = batch["image"]
    crops = images.shape[1] if images.ndim == 5 else 0
    if crops:
      images = images.reshape((-1,) + images.shape[2:])
    images = normalize_images(images, config.mean_rgb, config.std_rgb)
    logits = net.apply({"params": params}, images, train=False).astype(jnp.float32)
    if crops:
      probs = jax.nn.softmax(logits).reshape(-1, crops, logits.shape[-1]).mean(axis=1)
      log_probs = jnp.log(jnp.maximum(probs, 1e-30))
    else:
      log_probs = jax.nn.log_softmax(logits)
    labels = batch["label"]
    mask = batch["mask"].astype(jnp.float32)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    sums = {
        "loss_sum": (nll * mask).sum(),
        "top1_sum": (topk_correct(log_probs, labels, 1) * mask).sum(),
        "top5_sum": (topk_correct(log_probs, labels, 5) * mask).sum(),
        "count": mask.sum(),
    }
    return lax.psum(sums, DATA_AXIS)

  param_specs = P()
  if num_towers(mesh) > 1:
    if abstract_params is None:
      raise ValueError("Tower parallelism needs abstract_params to lay out the params.")
    param_specs = towers_lib.partition_specs(abstract_params)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(param_specs, P(DATA_AXIS)),
                          out_specs=P(), check_vma=False)
  return jax.jit(sharded, compiler_options=_compiler_options(model))


# --------------------------------------------------------------------------- state


def init_params(model, config, rng):
  size = config.image_size
  return model.init({"params": rng}, jnp.zeros((1, size, size, 3), jnp.float32),
                    train=False)["params"]


def create_train_state(model, tx, config, mesh) -> TrainState:
  """Initialises params and optimiser state directly as device arrays laid out for `mesh`.

  The single-device network is initialised in every layout, so a tower run
  starts from exactly the parameters a data-parallel run would.
  """

  def init():
    params = init_params(model, config, jax.random.key(config.seed))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return jax.jit(init, out_shardings=state_shardings(jax.eval_shape(init), mesh))()


def abstract_train_state(model, tx, config, mesh) -> TrainState:
  """Shapes, dtypes and replicated shardings of the state, without allocating it."""
  params = jax.eval_shape(lambda: init_params(model, config, jax.random.key(0)))
  state = jax.eval_shape(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                              opt_state=tx.init(p)), params)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state, state_shardings(state, mesh))


def abstract_batch(config, mesh, *, eval_batch: bool = False):
  """Global batch shapes as the step sees them (for ahead-of-time compilation)."""
  size = config.image_size
  batch = config.eval_batch_size if eval_batch else config.batch_size
  sharding = parallel.data_sharded(mesh)
  image_shape = (batch, size, size, 3)
  if eval_batch and config.eval_crops == 10:
    image_shape = (batch, 10, size, size, 3)
  spec = {"image": jax.ShapeDtypeStruct(image_shape, jnp.uint8, sharding=sharding),
          "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding)}
  if eval_batch:
    spec["mask"] = jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=sharding)
  return spec


def compile_ahead_of_time(step_fn, *abstract_args, name: str):
  """Compiles before the first batch, logging time and XLA's memory estimate."""
  start = time.perf_counter()
  compiled = step_fn.lower(*abstract_args).compile()
  seconds = time.perf_counter() - start
  mem = None
  try:
    analysis = compiled.memory_analysis()
    if analysis is not None:
      mem = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    pass
  logging.info("Compiled %s in %.1fs; memory estimate per device: %s", name, seconds,
               f"{mem / 2**20:.1f} MiB" if mem is not None else "n/a")
  return compiled, seconds


# --------------------------------------------------------------------------- evaluation


def evaluate(eval_step, params, config, mesh) -> dict[str, float]:
  """One exact pass over the eval split: every example once, padding masked out."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  totals = []
  for batch in parallel.prefetch_to_mesh(input_pipeline.create_eval_iterator(config), mesh,
                                         size=config.prefetch_batches):
    totals.append(eval_step(params, batch))
  if not totals:
    raise RuntimeError(f"The eval split {config.eval_split!r} of {config.dataset!r} is empty.")
  return metrics_lib.summarize_eval(metrics_lib.sum_trees(totals))


# --------------------------------------------------------------------------- the loop


class _PreemptionFlag:
  """Set by SIGTERM (cloud preemption): the loop saves, waits for the save and returns."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and exiting.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# Keys that may differ when a run is resumed: they change how long it runs,
# how often it reports, or where data lives, not what it computes.
RESUMABLE_KEYS = frozenset({
    "num_train_steps", "num_epochs", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "profile", "prefetch_batches",
    "eval_batch_size", "data_dir", "tfds_data_dir", "allow_config_change",
})


def prepare_workdir(workdir: str, config) -> None:
  """Creates the workdir, proves it writable, and refuses a different run's workdir.

  Runs before any compilation. A workdir whose config.json differs from this
  config in keys other than RESUMABLE_KEYS would resume someone else's run
  with new settings; that needs --config.allow_config_change=True.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(
        f"The workdir {workdir!r} is not writable ({e.strerror or e}); pass a writable "
        "--workdir.") from e
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or config.allow_config_change:
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(ckpt_lib.config_to_dict(config))
  changed = sorted(k for k in old.keys() | new.keys()
                   if k.split(".")[0] not in RESUMABLE_KEYS and old.get(k) != new.get(k))
  if changed:
    diffs = "\n  ".join(f"{k}: {old.get(k)!r} in the workdir, {new.get(k)!r} now" for k in changed)
    raise ValueError(
        f"The workdir {workdir!r} holds a run with a different config:\n  {diffs}\n"
        "Use another --workdir, or pass --config.allow_config_change=True to resume it "
        "with the new values.")


def _write_config(workdir, config):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(ckpt_lib.config_to_dict(config), f, indent=2)


def _clear_done(workdir):
  """A run that starts (or resumes with more steps) is not finished until it ends."""
  if jax.process_index() == 0:
    try:
      os.remove(os.path.join(workdir, DONE_FILE))
    except FileNotFoundError:
      pass


def _write_done(workdir, final, total_steps):
  if jax.process_index() == 0:
    path = os.path.join(workdir, DONE_FILE)
    with open(path + ".tmp", "w") as f:
      json.dump({"step": final["step"], "total_steps": total_steps,
                 "metrics": {k: v for k, v in final.items() if isinstance(v, (int, float))}},
                f, indent=2)
    os.replace(path + ".tmp", path)


def _check_finite(pending, step_now):
  """Raises NonFiniteLossError naming the first step with a NaN/inf loss or gradient."""
  bad = metrics_lib.first_non_finite_step(pending)
  if bad is not None:
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at step {bad} (checked at step {step_now}). The last "
        "checkpoint is the last finite state. Likely causes: a learning rate too high for "
        "this batch size/schedule (try a lower --config.learning_rate or a warm-up), or "
        "corrupt input data.")
  pending.clear()


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains and evaluates; resumable. Returns the final metrics (also in metrics.jsonl)."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  config_lib.validate_config(config)
  mesh = parallel.create_mesh(model_parallel=config.parallelism.model)
  config_lib.validate_config(config, num_devices=parallel.data_parallel_size(mesh))
  prepare_workdir(workdir, config)

  info = input_pipeline.get_dataset_info(config)
  num_classes = int(config.num_classes or info.num_classes)
  steps_per_epoch = max(1, info.num_train_examples // config.batch_size)
  total_steps = optim.total_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  logging.info("Dataset %s: %d train / %d eval examples, %d classes; %d steps/epoch, %d steps.",
               config.dataset, info.num_train_examples, info.num_eval_examples, num_classes,
               steps_per_epoch, total_steps)

  model = config_lib.create_model(config, num_classes)
  tx = optim.create_optimizer(config)
  learning_rate_fn = optim.create_learning_rate_fn(config, steps_per_epoch)
  plateau = optim.PlateauScheduler.from_config(config)

  writer = metrics_lib.create_writer(workdir)
  _clear_done(workdir)
  _write_config(workdir, config)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR),
                               keep=config.keep_checkpoints)

  abstract_state = abstract_train_state(model, tx, config, mesh)
  restored = ckpt.restore_latest(abstract_params=abstract_state.params,
                                 abstract_opt_state=abstract_state.opt_state)
  if restored is None:
    state = create_train_state(model, tx, config, mesh)
    writer.write_hparams({k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                          for k, v in _flatten(ckpt_lib.config_to_dict(config)).items()})
    logging.info("Initialised %s (%s parameters).", config.model.variant,
                 f"{sum(x.size for x in jax.tree.leaves(state.params)):,}")
  else:
    params, opt_state, meta = restored
    state = TrainState(step=jax.device_put(jnp.asarray(meta["step"], jnp.int32),
                                           parallel.replicated(mesh)),
                       params=params, opt_state=opt_state)
    plateau.load_state_dict(meta.get("plateau", {}))
    logging.info("Resumed from step %d in %s.", meta["step"], ckpt.directory)
  start_step = int(jax.device_get(state.step))

  train_step = make_train_step(model, tx, learning_rate_fn, config, mesh, abstract_state)
  eval_step = make_eval_step(model, config, mesh, abstract_state.params)
  lr_scale_sharding = parallel.replicated(mesh)
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=lr_scale_sharding)
  train_step, compile_s = compile_ahead_of_time(
      train_step, abstract_state, abstract_batch(config, mesh), scalar, name="train step")

  def save(step, *, metrics=None, force=False):
    meta = {"config": ckpt_lib.config_to_dict(config), "plateau": plateau.state_dict(),
            "class_names": list(info.class_names or []), "num_classes": num_classes,
            "source": "train"}
    ckpt.save(step, params=state.params, opt_state=state.opt_state, meta=meta,
              metrics=metrics, force=force)

  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_secs=10.0)]
  if config.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5,
                                          first_profile=min(start_step + 10, total_steps)))

  train_iter = parallel.prefetch_to_mesh(
      input_pipeline.create_train_iterator(config, start_step=start_step), mesh,
      size=config.prefetch_batches)
  window, pending = [], []
  final: dict[str, Any] = {}
  window_start = time.perf_counter()
  step = start_step
  multi_process = jax.process_count() > 1
  try:
    with _PreemptionFlag() as preemption:
      while step < total_steps:
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = next(train_iter)
          scale = np.float32(np.nan if faults.hit("nan", step + 1) else plateau.scale)
          lr_scale = jax.device_put(scale, lr_scale_sharding)
          state, step_metrics = train_step(state, batch, lr_scale)
        step += 1
        faults.hit("step", step)
        window.append(step_metrics)
        pending.append((step, step_metrics["loss_sum"] + step_metrics["grad_norm"]
                             + step_metrics["update_norm"]))
        for hook in hooks:
          hook(step)

        if step % config.log_every_steps == 0 or step == total_steps:
          _check_finite(pending, step)
          elapsed = time.perf_counter() - window_start
          summary = metrics_lib.summarize_train(window)
          summary["learning_rate"] = float(jax.device_get(window[-1]["learning_rate"]))
          summary["images_per_sec"] = len(window) * config.batch_size / max(elapsed, 1e-9)
          writer.write_scalars(step, summary)
          final.update(summary)
          window, window_start = [], time.perf_counter()

        eval_metrics = None
        if step % eval_every == 0 or step == total_steps:
          _check_finite(pending, step)
          eval_start = time.perf_counter()
          eval_metrics = evaluate(eval_step, state.params, config, mesh)
          eval_metrics["eval_time_sec"] = time.perf_counter() - eval_start
          if plateau.update(eval_metrics["eval_top1"]):
            logging.info("Validation accuracy plateaued: learning rate scale now %g.", plateau.scale)
          writer.write_scalars(step, eval_metrics)
          final.update(eval_metrics)
          window_start += eval_metrics["eval_time_sec"]

        preempted = preemption.requested or (multi_process and ckpt.reached_preemption(step))
        if (eval_metrics is not None or step % config.checkpoint_every_steps == 0
            or step == total_steps or preempted):
          _check_finite(pending, step)
          save(step, metrics={"eval_top1": eval_metrics["eval_top1"]} if eval_metrics else None,
               force=preempted)
          faults.hit("save", step)
        if preempted:
          ckpt.wait()
          logging.warning("Saved step %d after SIGTERM; exiting. Rerun the same command to resume.",
                          step)
          break
  finally:
    # Saves already started hold checked, finite states: let them land even
    # when the loop is leaving on an error (non-finite loss, bad batch, ...).
    ckpt.wait()
    ckpt.close()
  writer.flush()
  final["step"] = step
  final["compile_time_sec"] = compile_s
  if step == total_steps:
    _write_done(workdir, final, total_steps)
  return final


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out
