"""The jitted programs: train state, the sharded train and eval steps, their layouts.

The steps are per-device programs under `jax.jit(jax.shard_map(...))`. The
state is replicated over the `"data"` axis (split over `"model"` with the
paper's towers), each device sees its slice of the global batch, gradients
are averaged with `lax.pmean` (`check_vma=False`, so autodiff adds no sum of
its own: with it a pmean would scale gradients by the device count), and
metrics leave as (sum, count) pairs added with `lax.psum`.

Nothing in a step needs the host: the learning-rate scale of the plateau rule
lives in the state, the finiteness check and the logging window accumulate on
the device, and batches of prepared data are cropped, flipped and lit on the
device. The loop only reads a window when it logs.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from alexnet_jax import evaluation
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import parallel
from alexnet_jax.data import device_augment as device_augment_lib
from alexnet_jax.models import cpu_kernels
from alexnet_jax.models import towers as towers_lib
from alexnet_jax.parallel import DATA_AXIS, MODEL_AXIS


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  plateau: optim.PlateauState


def empty_window() -> dict[str, jax.Array]:
  """Metric sums over a logging window; `first_bad_step` is -1 while every step is finite."""
  zero = np.float32(0.0)  # Host values: the loop puts them on the devices explicitly.
  return {"loss_sum": zero, "top1_sum": zero, "count": zero, "grad_norm_sum": zero,
          "num_steps": zero, "learning_rate": zero, "first_bad_step": np.int32(-1)}


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy with optional label smoothing."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def device_dropout_key(root, step, towers: int = 1):
  """This device's dropout key at `step` (inside shard_map over `"data"`).

  Different units drop on every device and step, and the key is a function of
  the step alone, so a resumed run draws the same masks.
  """
  key = jax.random.fold_in(jax.random.fold_in(root, step), lax.axis_index(DATA_AXIS))
  if towers > 1:
    key = jax.random.fold_in(key, lax.axis_index(MODEL_AXIS))
  return key


def num_towers(mesh) -> int:
  return mesh.shape[MODEL_AXIS] if MODEL_AXIS in mesh.axis_names else 1


def state_partition_specs(state, mesh):
  """Data parallelism replicates everything; towers split params and optimiser state."""
  if num_towers(mesh) == 1:
    return jax.tree.map(lambda _: P(), state)
  return towers_lib.partition_specs(state)  # The step and plateau scalars stay whole.


def state_shardings(state, mesh):
  return jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec),
                      state_partition_specs(state, mesh), is_leaf=lambda x: isinstance(x, P))


def _global_norm(tree, towers):
  sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))
  if towers > 1:
    sq = lax.psum(sq, MODEL_AXIS)
  return jnp.sqrt(sq)


def step_model(model, mesh):
  """The per-device network: the model, or one tower of it."""
  n = num_towers(mesh)
  return model if n == 1 else towers_lib.create_tower_model(model, n)


def _compiler_options(model) -> dict:
  """The CPU formulations' options; on GPUs XLA's latency-hiding scheduler, which overlaps
  the gradient all-reduce of one layer with the backward of the next."""
  if jax.default_backend() == "gpu":
    return {"xla_gpu_enable_latency_hiding_scheduler": True}
  return cpu_kernels.compiler_options(getattr(model, "cpu_kernels", "off"))


def make_train_step(model, tx, learning_rate_fn: Callable, config, mesh, abstract_state=None,
                    device_augment: Callable | None = None):
  """Returns jitted `(state, window, batch) -> (state, window)`; the state is donated.

  `window` accumulates metric sums and restarts at every multiple of
  config.log_every_steps, so the loop reads it only when it logs.
  `device_augment(images, global_indices)` crops stored images on the device
  (prepared data); without it batches hold final uint8 crops.
  `abstract_state` is needed with tower parallelism, to lay the state out.
  """
  dropout_root = jax.random.fold_in(jax.random.key(config.seed), 0x0D0)
  label_smoothing = float(config.label_smoothing)
  log_every = int(config.log_every_steps)
  global_batch = int(config.batch_size)
  accum = int(config.grad_accum_steps)
  mixup_alpha, cutmix_alpha = float(config.mixup_alpha), float(config.cutmix_alpha)
  mixing = bool(mixup_alpha or cutmix_alpha)
  towers = num_towers(mesh)
  net = step_model(model, mesh)

  def per_device(state: TrainState, window, batch):
    step = state.step
    images = batch["image"]
    local = images.shape[0]
    indices = step * global_batch + lax.axis_index(DATA_AXIS) * local + jnp.arange(local)
    if device_augment is not None:
      images = device_augment(images, indices)
    images = evaluation.normalize_images(images, config.mean_rgb, config.std_rgb)
    labels = batch["label"]
    # Soft targets: lam of the label, 1 - lam of the partner's (Mixup/CutMix), else lam 1.
    targets = (labels, labels, jnp.ones(labels.shape, jnp.float32))
    if mixing:
      images, partner, lam = device_augment_lib.mix(
          images, labels, device_augment_lib.example_keys(config.seed, indices),
          mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
      targets = (labels, partner, lam)
    key = device_dropout_key(dropout_root, step, towers)

    def loss_fn(params, images, targets, key):
      logits = net.apply({"params": params}, images, train=True, rngs={"dropout": key})
      logits = logits.astype(jnp.float32)
      label, partner, lam = targets
      losses = cross_entropy(logits, label, label_smoothing)
      if mixing:
        losses = lam * losses + (1.0 - lam) * cross_entropy(logits, partner, label_smoothing)
      # Every tower computes the same loss and the gathers' backward adds
      # their cotangents: 1/towers gives the single-device gradient.
      return losses.mean() / towers, (losses, logits)

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if accum == 1:
      grads, (losses, logits) = grad_fn(state.params, images, targets, key)
    else:
      # config.grad_accum_steps micro-batches in sequence, one update: the mean of
      # equal micro-batches' mean gradients is the whole batch's.
      def micro(total, xs):
        i, x, t = xs
        g, aux = grad_fn(state.params, x, t, jax.random.fold_in(key, i))
        return jax.tree.map(jnp.add, total, g), aux

      split = lambda a: a.reshape((accum, a.shape[0] // accum) + a.shape[1:])
      grads, (losses, logits) = lax.scan(
          micro, jax.tree.map(jnp.zeros_like, state.params),
          (jnp.arange(accum), split(images), jax.tree.map(split, targets)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      losses, logits = losses.reshape(-1), logits.reshape((-1, logits.shape[-1]))
    grads = lax.pmean(grads, DATA_AXIS)
    lr = learning_rate_fn(step) * state.plateau.scale
    opt_state = optim.with_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sums = lax.psum({"loss_sum": losses.sum(),
                     "top1_sum": (jnp.argmax(logits, -1) == labels).astype(jnp.float32).sum(),
                     "count": jnp.float32(labels.shape[0])}, DATA_AXIS)
    grad_norm = _global_norm(grads, towers)
    # A non-finite update (say, a NaN learning rate) poisons params while the
    # loss and gradient are still finite: check all three.
    finite = jnp.isfinite(sums["loss_sum"] + grad_norm + _global_norm(updates, towers))
    window = jax.tree.map(lambda w, e: jnp.where(step % log_every == 0, e, w), window,
                          empty_window())
    window = {
        "loss_sum": window["loss_sum"] + sums["loss_sum"],
        "top1_sum": window["top1_sum"] + sums["top1_sum"],
        "count": window["count"] + sums["count"],
        "grad_norm_sum": window["grad_norm_sum"] + grad_norm,
        "num_steps": window["num_steps"] + 1.0,
        "learning_rate": jnp.asarray(lr, jnp.float32),
        "first_bad_step": jnp.where((window["first_bad_step"] < 0) & ~finite, step + 1,
                                    window["first_bad_step"]).astype(jnp.int32),
    }
    return state.replace(step=step + 1, params=params, opt_state=opt_state), window

  if towers > 1 and abstract_state is None:
    raise ValueError("Tower parallelism needs abstract_state to lay out the train state.")
  specs = state_partition_specs(abstract_state, mesh) if abstract_state is not None else P()
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(specs, P(), P(DATA_AXIS)),
                          out_specs=(specs, P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,), compiler_options=_compiler_options(model))


def make_eval_step(model, config, mesh, abstract_params=None,
                   device_crops: Callable | None = None):
  """Returns jitted `(params, batch, totals) -> totals` over a padded, masked batch.

  `totals` are an eval pass's running sums (`eval_totals(mesh)` before the
  first batch), donated. Adding them inside the step makes each step depend
  on the one before, so a device runs an eval pass's steps in order:
  independent steps may run at once on XLA:CPU's thread pool, and two of them
  waiting in their all-reduce for a device with no thread left deadlock
  (seen with 2 simulated devices on 2 cores).

  With 10 crops ([B, 10, S, S, 3]) the softmax outputs are averaged, as in the
  paper. `device_crops(images)` cuts the crops on the device (prepared data).
  """
  net = step_model(model, mesh)

  def per_device(params, batch, totals):
    images = batch["image"] if device_crops is None else device_crops(batch["image"])
    log_probs = evaluation.model_log_probabilities(net, params, images, config.mean_rgb,
                                                   config.std_rgb, per_crop=True)
    sums = lax.psum(evaluation.eval_sums(log_probs, batch["label"], batch["mask"]), DATA_AXIS)
    return jax.tree.map(jnp.add, totals, sums)

  param_specs = P()
  if num_towers(mesh) > 1:
    if abstract_params is None:
      raise ValueError("Tower parallelism needs abstract_params to lay out the params.")
    param_specs = towers_lib.partition_specs(abstract_params)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(param_specs, P(DATA_AXIS), P()),
                          out_specs=P(), check_vma=False)
  return jax.jit(sharded, donate_argnums=(2,), compiler_options=_compiler_options(model))


def eval_totals(mesh) -> dict[str, jax.Array]:
  """Zero running sums of an eval pass, replicated on the mesh (the eval step's `totals`)."""
  return jax.device_put(evaluation.empty_eval_sums(), parallel.replicated(mesh))


def abstract_eval_totals(mesh):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)),
      jax.eval_shape(evaluation.empty_eval_sums))


def make_plateau_step(config):
  """Jitted `(state, eval sums) -> state`: the plateau rule, on the device."""
  update = optim.plateau_update_fn(config)

  def apply(state: TrainState, sums):
    top1 = sums["top1_sum"] / jnp.maximum(sums["count"], 1.0)
    return state.replace(plateau=update(state.plateau, top1))

  return jax.jit(apply, donate_argnums=(0,))


# --------------------------------------------------------------------------- state


def _init_fn(model, tx, config):
  """`() -> TrainState`: the initial state of a run."""

  def init():
    params = models.init_params(model, config.image_size, jax.random.key(config.seed))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      plateau=optim.PlateauState.initial())

  return init


def create_train_state(model, tx, config, mesh) -> TrainState:
  """Params and optimiser state created directly as device arrays laid out for `mesh`.

  The single-device network is initialised in every layout, so a tower run
  starts from exactly the parameters of a data-parallel run.
  """
  init = _init_fn(model, tx, config)
  return jax.jit(init, out_shardings=state_shardings(jax.eval_shape(init), mesh))()


def abstract_train_state(model, tx, config, mesh) -> TrainState:
  """Shapes, dtypes and shardings of the state, without allocating it."""
  state = jax.eval_shape(_init_fn(model, tx, config))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      state, state_shardings(state, mesh))


def abstract_window(mesh):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)),
      jax.eval_shape(empty_window))


def abstract_batch(config, mesh, *, eval_batch: bool = False, stored_size: int | None = None):
  """Global batch shapes as a step sees them (for ahead-of-time compilation).

  stored_size: images arrive uncropped at that size (prepared data).
  """
  size = stored_size or config.image_size
  batch = config.eval_batch_size if eval_batch else config.batch_size
  sharding = parallel.data_sharded(mesh)
  image_shape = (batch, size, size, 3)
  if eval_batch and config.eval_crops == 10 and not stored_size:
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
