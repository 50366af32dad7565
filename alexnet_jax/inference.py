"""Restore a checkpoint anywhere and classify images exactly as eval does.

    from alexnet_jax import inference
    predictor = inference.load("/path/to/workdir")        # newest step
    probs = predictor.predict([image1, image2])           # numpy [2, num_classes]
    for name, p in predictor.top_k(probs[0]):
      print(f"{p:.3f} {name}")

Preprocessing is the eval pipeline's own function
(`augment.eval_preprocess_fn`), so a prediction equals what eval measured.

Inference is single-process: under `jax.distributed` call it on one process
(it uses that process's local devices only).

Images may be uint8 arrays [H, W], [H, W, 1|3|4] (greyscale is repeated into
RGB, alpha dropped), a uint8 batch [N, H, W, C], encoded file bytes (JPEG, PNG,
GIF, BMP: decoded as the TFDS/imagefolder eval decodes them), or file paths.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config_lib
from alexnet_jax import evaluation
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import workdir as workdir_lib

_BATCH_AXIS = "batch"


# ----------------------------------------------------------------------------
# Class names.
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def imagenet_readable_names() -> dict[str, str] | None:
  """{synset id: "first name"} for the 1000 ILSVRC-2012 classes, or None.

  TFDS labels `imagenet2012` with WordNet ids (n01440764, ...). TFDS also
  ships, offline, the ids in class order (datasets/imagenet2012/labels.txt)
  and the readable names in the same order (the `IMAGENET_LABELS_LIST` of its
  SI-Score dataset). The names are read with `ast` rather than imported so
  that this neither imports nor depends on the rest of tensorflow_datasets.
  """
  try:
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
      return None
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    synsets = (root / "datasets" / "imagenet2012" / "labels.txt").read_text().split()
    tree = ast.parse((root / "datasets" / "siscore" / "labels.py").read_text())
    names = None
    for node in tree.body:
      if (isinstance(node, ast.Assign) and len(node.targets) == 1
          and getattr(node.targets[0], "id", None) == "IMAGENET_LABELS_LIST"):
        names = ast.literal_eval(node.value)
    if names is None or len(names) != 1000 or len(synsets) != 1000:
      return None
    return {s: n.split(",")[0].strip() for s, n in zip(synsets, names)}
  except (OSError, SyntaxError, ValueError):
    return None


def _display_class_names(stored, num_classes: int, dataset: str) -> list[str]:
  """Names to show for each class index.

  The checkpoint's names (the dataset's metadata) when it has them, with
  ImageNet synset ids given readable names ("tench (n01440764)"). A
  checkpoint without names (e.g. converted PyTorch weights) is assumed to use
  the ILSVRC-2012 order when it has 1000 classes and an imagenet2012 config;
  otherwise classes are called "class_<i>".
  """
  stored = list(stored or [])
  readable = imagenet_readable_names()
  if not stored and readable and num_classes == 1000 and str(dataset).startswith("imagenet2012"):
    stored = list(readable)
  if len(stored) != num_classes:
    return [f"class_{i}" for i in range(num_classes)]
  if readable and all(s in readable for s in stored):
    return [f"{readable[s]} ({s})" for s in stored]
  return [str(s) for s in stored]


# ----------------------------------------------------------------------------
# Finding and restoring the checkpoint.
# ----------------------------------------------------------------------------


def _resolve(path) -> tuple[epath.Path, int | None, epath.Path]:
  """(checkpoints dir, step implied by the path or None, workdir)."""
  path = workdir_lib.absolute(path)
  if not path.exists():
    raise ckpt_lib.CheckpointError(
        f"{path} does not exist. Pass a workdir written by main.py or alexnet_jax.convert "
        f"(it holds {workdir_lib.CHECKPOINT_DIR}/<step>/), or its "
        f"{workdir_lib.CHECKPOINT_DIR}/ directory.")
  # One step's directory, e.g. workdir/checkpoints/1000.
  if path.name.isdigit() and (path / "params").is_dir():
    return path.parent, int(path.name), path.parent.parent
  # A workdir holds checkpoints/; a checkpoints/ directory holds numbered steps.
  if not (path / workdir_lib.CHECKPOINT_DIR).is_dir() and path.is_dir() and any(
      p.name.isdigit() and p.is_dir() for p in path.iterdir()):
    return path, None, path.parent
  return path / workdir_lib.CHECKPOINT_DIR, None, path


def _no_checkpoint_error(path, directory):
  return ckpt_lib.CheckpointError(
      f"No checkpoint found in {path} (looked for numbered step directories in {directory}). "
      "Pass a workdir written by `python main.py` or `python -m alexnet_jax.convert`; a run "
      "writes its first checkpoint after config.checkpoint_every_steps steps or at its first "
      "eval.")


def _config_from(meta: dict, workdir) -> ml_collections.ConfigDict:
  """The run's config: from the checkpoint's meta, else the workdir's config.json."""
  config = meta.get("config")
  if not config:
    path = epath.Path(workdir) / workdir_lib.CONFIG_FILE
    if not path.exists():
      raise ckpt_lib.CheckpointError(
          f"The checkpoint has no stored config and {path} does not exist: the model cannot "
          "be rebuilt. Copy the run's config.json next to its checkpoints/.")
    config = workdir_lib.read_json(path, "the run's config")
  return config_lib.from_dict(config)


def inference_mesh(devices=None) -> Mesh:
  """A 1-D mesh over this process's devices (batch split, params replicated).

  Auto axis type: the forward pass is plain jit code and lets XLA propagate
  the batch sharding through it.
  """
  devices = jax.local_devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (_BATCH_AXIS,))


@dataclasses.dataclass
class Predictor:
  """A restored model plus the eval preprocessing of its config.

  Attributes:
    config: the run's ml_collections config (unlocked: change e.g.
      `eval_batch_size` or `tfds_data_dir` to evaluate elsewhere).
    params: the restored params, replicated over `mesh`.
    class_names: a display name per class index.
    num_classes: classifier size.
    step: the checkpoint step restored.
    checkpoint_dir: where it came from.
    mesh: the devices predictions run on.
  """
  config: ml_collections.ConfigDict = dataclasses.field(repr=False)
  params: Any = dataclasses.field(repr=False)
  class_names: list[str] = dataclasses.field(repr=False)
  num_classes: int
  step: int
  checkpoint_dir: str
  mesh: Mesh
  model: Any = dataclasses.field(repr=False, default=None)
  meta: dict = dataclasses.field(repr=False, default_factory=dict)

  def __post_init__(self):
    self._forward = jax.jit(functools.partial(forward, self.model, self.config))

  # ---- preprocessing ----
  def default_crops(self, crops: int | None = None) -> int:
    """`crops` checked (1 or 10); config.eval_crops when None."""
    crops = int(self.config.get("eval_crops", 1) or 1) if crops is None else crops
    if crops not in evaluation.CROPS:
      raise ValueError(f"crops={crops!r} is not allowed: use 1 (centre crop) or 10 (four "
                       "corners and centre, and their mirror images).")
    return int(crops)

  def preprocess(self, images, *, crops: int | None = None) -> np.ndarray:
    """Images of any size -> uint8 eval crops: [N, S, S, 3], or [N, 10, S, S, 3].

    Exactly what the eval input pipeline feeds the eval step for the same
    image (same TF ops, run eagerly). `crops` defaults to config.eval_crops.
    """
    from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
    from alexnet_jax.data import augment  # pylint: disable=g-import-not-at-top  (imports TF)
    crops = self.default_crops(crops)
    runtime.hide_accelerators_from_tensorflow()
    fn = augment.eval_preprocess_fn(self.config, crops)
    items = _as_list(images)
    if not items:
      raise ValueError("predict() got no images.")
    return np.stack([fn(_to_tf_input(x, i)).numpy() for i, x in enumerate(items)])

  # ---- prediction ----
  def predict(self, images, *, crops: int | None = None, batch_size: int = 64) -> np.ndarray:
    """Class probabilities, numpy float32 [N, num_classes].

    Args:
      images: a list of images or a uint8 batch [N, H, W, C] (see the module
        docstring for accepted forms); sizes may differ.
      crops: 1 (centre crop) or 10 (softmax averaged over the paper's 10
        crops); default config.eval_crops.
      batch_size: images per forward pass (memory knob; results do not depend
        on it).
    """
    return self.predict_crops(self.preprocess(images, crops=crops), batch_size=batch_size)

  def predict_crops(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Probabilities for already preprocessed uint8 crops ([N,S,S,3] or [N,K,S,S,3]).

    This is the device half of `predict`; feed it batches from
    `data.create_eval_iterator(predictor.config)` to score a split.
    """
    crops = np.asarray(crops)
    s = int(self.config.image_size)
    if crops.dtype != np.uint8 or crops.ndim not in (4, 5) or crops.shape[-3:] != (s, s, 3):
      raise ValueError(f"predict_crops expects uint8 [N, {s}, {s}, 3] or [N, K, {s}, {s}, 3] "
                       f"crops, got {crops.dtype} {crops.shape}; use predict() for raw images.")
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1.")
    outputs = []
    for start in range(0, len(crops), batch_size):
      chunk = crops[start:start + batch_size]
      padded = _bucket(len(chunk), self.mesh.devices.size)
      pad = np.zeros((padded - len(chunk),) + chunk.shape[1:], np.uint8)
      batch = jax.device_put(np.concatenate([chunk, pad]),
                             NamedSharding(self.mesh, P(_BATCH_AXIS)))
      outputs.append(np.asarray(jax.device_get(self._forward(self.params, batch)))[:len(chunk)])
    return np.concatenate(outputs) if outputs else np.zeros((0, self.num_classes), np.float32)

  def top_k(self, probs, k: int = 5) -> list[tuple[str, float]]:
    """[(class name, probability)] of one probability vector, highest first."""
    probs = np.asarray(probs)
    order = np.argsort(-probs, kind="stable")[:min(k, probs.shape[-1])]
    return [(self.class_names[i], float(probs[i])) for i in order]


def forward(model, config, params, crops):
  """uint8 crops [B, S, S, 3] or [B, K, S, S, 3] -> float32 probabilities [B, classes].

  The eval step's forward pass (`evaluation.log_probabilities`), exponentiated.
  """
  return jnp.exp(evaluation.model_log_probabilities(model, params, crops, config.mean_rgb,
                                                    config.std_rgb))


def _bucket(n: int, num_devices: int) -> int:
  """Padded batch size: a power of two >= n, rounded up to the device count.

  A few sizes only, so a notebook calling predict with varying counts compiles
  a handful of programs, not one per count.
  """
  size = 1 << max(0, (n - 1).bit_length())
  return -(-size // num_devices) * num_devices


def load(workdir_or_checkpoint_dir, step: int | None = None, *, devices=None,
         use_ema: bool = False) -> Predictor:
  """Restores params (only) and config from a checkpoint; returns a Predictor.

  Args:
    workdir_or_checkpoint_dir: a workdir, its checkpoints/ directory, or one
      step's directory inside it (local, gs:// or any path etils.epath opens).
    step: the step to restore; default the newest readable one (a damaged
      newest step is skipped with a warning naming it and the step used).
    devices: where to put the params (replicated); default this process's
      devices. E.g. `jax.local_devices()[:1]` for one device.
    use_ema: predict with the run's moving average of the params
      (config.ema_decay > 0), read from its optimiser state.

  Raises:
    checkpoint.CheckpointError: no checkpoint there, the step does not exist
      or is unreadable, the format version is not this code's, or the stored
      params do not fit the model the config describes.
  """
  path = os.fspath(workdir_or_checkpoint_dir)
  directory, path_step, workdir = _resolve(path)
  if path_step is not None:
    if step is not None and step != path_step:
      raise ValueError(f"step={step} contradicts the step directory {path} (step {path_step}).")
    step = path_step
  if not directory.is_dir():
    raise _no_checkpoint_error(path, directory)
  mesh = inference_mesh(devices)
  built = {}

  def replicated(abstract):
    """Abstract arrays laid out replicated over the mesh (restore targets)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        abstract)

  def target(meta, stored):
    """The model the step's config describes, replicated over the mesh (abstract)."""
    config = _config_from(meta, workdir)
    num_classes = int(meta.get("num_classes") or config.get("num_classes")
                      or np.shape(jax.tree.leaves(stored)[-1])[-1])
    model = config_lib.create_model(config, num_classes)
    built.update(config=config, model=model, num_classes=num_classes)
    return replicated(jax.eval_shape(lambda: models.init_params(
        model, config.image_size, jax.random.key(0))))

  def opt_target(abstract_params):
    if not built["config"].get("ema_decay"):
      raise ckpt_lib.CheckpointError(f"{path} was trained without config.ema_decay: it has "
                                     "no moving average to use (drop --use_ema).")
    return replicated(jax.eval_shape(optim.create_optimizer(built["config"]).init,
                                     abstract_params))

  ckpt = ckpt_lib.Checkpointer(directory, read_only=True, async_save=False)
  try:
    restored = ckpt.restore_latest(abstract_params=target, step=step,
                                   abstract_opt_state=opt_target if use_ema else None)
  finally:
    ckpt.close()
  if restored is None:
    raise _no_checkpoint_error(path, directory)
  params, opt_state, meta = restored
  if use_ema:
    params = optim.ema_params(opt_state)
  config, num_classes = built["config"], built["num_classes"]
  class_names = _display_class_names(meta.get("class_names"), num_classes,
                                     config.get("dataset", ""))
  return Predictor(config=config, params=params, class_names=class_names,
                   num_classes=num_classes, step=int(meta["step"]), checkpoint_dir=str(directory),
                   mesh=mesh, model=built["model"], meta=meta)


# ----------------------------------------------------------------------------
# Host-side preprocessing helpers.
# ----------------------------------------------------------------------------


def _as_list(images) -> list:
  if isinstance(images, np.ndarray) and images.ndim == 4:
    return list(images)
  if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or hasattr(images, "__array__"):
    return [images]
  return list(images)


def _to_tf_input(image, index: int):
  """One image -> what augment's eval functions take (a tf.string or uint8 tensor)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(image, (str, os.PathLike)):
    image = epath.Path(image).read_bytes()
  if isinstance(image, bytes):
    return tf.constant(image, tf.string)
  array = np.asarray(image)
  if array.dtype != np.uint8:
    raise ValueError(
        f"Image {index} has dtype {array.dtype}; predict() takes uint8 pixels on 0..255 (as "
        "decoded from a file), encoded bytes, or a path. Convert with e.g. "
        "`np.clip(x * 255, 0, 255).round().astype(np.uint8)` for floats on [0, 1].")
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or not 1 <= array.shape[-1] <= 4 or 0 in array.shape:
    raise ValueError(f"Image {index} has shape {array.shape}; expected [H, W] or [H, W, C] "
                     "with C in 1..4 (greyscale, greyscale+alpha, RGB, RGBA) and H, W > 0.")
  return tf.constant(array)


def available_steps(workdir_or_checkpoint_dir) -> list[int]:
  """The checkpoint steps stored under a workdir (empty when none)."""
  directory, _, _ = _resolve(workdir_or_checkpoint_dir)
  if not directory.is_dir():
    return []
  ckpt = ckpt_lib.Checkpointer(directory, read_only=True, async_save=False)
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


__all__ = ["Predictor", "available_steps", "forward", "imagenet_readable_names",
           "inference_mesh", "load"]
