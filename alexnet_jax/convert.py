"""PyTorch AlexNet weights -> Flax params, and a CLI that writes a checkpoint.

Works for the `torchvision` and `seed` variants, whose PyTorch modules share
torchvision's key layout (`TORCH_NAMES`). Two layout differences matter. Conv
kernels are OIHW in PyTorch and HWIO in Flax. And fc6 consumes a flattened
feature map: PyTorch flattens (C, H, W), our NHWC model flattens (H, W, C), so
fc6's input rows are permuted, not merely transposed; getting this wrong still
"loads" but gives wrong logits.

  python -m alexnet_jax.convert --variant=torchvision \\
      --torch_checkpoint=alexnet-owt-7be5be79.pth --workdir=/tmp/tv [--num_classes=N]

writes a params-only checkpoint plus config.json (`save_pretrained`).
"""

import io
import math

import numpy as np

from alexnet_jax import cli
from alexnet_jax import models

CONVERTIBLE_VARIANTS = ("torchvision", "seed")

# Flax layer name -> PyTorch module prefix (torchvision's `alexnet` layout).
TORCH_NAMES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}


def _to_numpy(value):
  """A torch tensor or array-like as a float32 numpy array (torch not imported)."""
  if hasattr(value, "detach"):  # torch.Tensor; .float() also handles bf16/fp16
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, dtype=np.float32)


def _flax_shapes(variant, num_classes):
  """{layer: {"kernel": shape, "bias": shape}} of the Flax model, traced abstractly."""
  import jax  # pylint: disable=g-import-not-at-top
  model = models.create_model(variant, num_classes=num_classes)
  size = models.default_image_size(variant)
  shapes = jax.eval_shape(lambda: models.init_params(model, size, jax.random.key(0)))
  return {layer: {k: tuple(v.shape) for k, v in leaves.items()}
          for layer, leaves in shapes.items()}


def _torch_shape(layer, kind, flax_shape):
  if kind == "bias":
    return flax_shape
  if layer.startswith("conv"):
    h, w, i, o = flax_shape
    return (o, i, h, w)
  fan_in, fan_out = flax_shape
  return (fan_out, fan_in)


def _strip_prefix(state_dict, prefix="module."):
  """Drops the `module.` prefix DataParallel/DDP checkpoints carry."""
  if state_dict and all(k.startswith(prefix) for k in state_dict):
    return {k[len(prefix):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def from_torch_state_dict(state_dict, variant, *, num_classes=None):
  """Maps a torchvision-layout AlexNet state dict to Flax params.

  Args:
    state_dict: mapping of `features.N.weight`, ..., `classifier.6.bias` to
      torch tensors or numpy arrays (e.g. `torch_model.state_dict()`). A
      `module.` prefix on every key (DataParallel) is dropped.
    variant: "torchvision" or "seed".
    num_classes: expected classifier size; None reads it from
      `classifier.6.weight`.

  Returns:
    {"conv1": {"kernel", "bias"}, ..., "fc8": {...}}, float32 numpy arrays,
    ready for `model.apply({"params": params}, images)`.

  Raises:
    ValueError: unsupported variant, or a state dict that does not fit the
      variant; the message lists every missing key, unexpected key and shape
      mismatch at once.
  """
  if variant not in CONVERTIBLE_VARIANTS:
    raise ValueError(f"Cannot convert PyTorch weights for variant {variant!r}; "
                     f"supported: {', '.join(CONVERTIBLE_VARIANTS)}.")
  state_dict = _strip_prefix(state_dict)
  if num_classes is None:
    head = state_dict.get(TORCH_NAMES["fc8"] + ".weight")
    if head is None or len(np.shape(head)) != 2:
      raise ValueError(
          "Cannot infer num_classes: the state dict has no 2-D "
          f"'{TORCH_NAMES['fc8']}.weight'. Pass num_classes explicitly. Keys: "
          f"{sorted(state_dict)}")
    num_classes = int(np.shape(head)[0])

  expected = {}  # torch key -> (layer, kind, flax shape, torch shape)
  for layer, leaves in _flax_shapes(variant, num_classes).items():
    for kind, flax_shape in leaves.items():
      key = f"{TORCH_NAMES[layer]}.{'weight' if kind == 'kernel' else 'bias'}"
      expected[key] = (layer, kind, flax_shape, _torch_shape(layer, kind, flax_shape))

  problems = []
  for key in sorted(set(expected) - set(state_dict)):
    problems.append(f"missing key {key!r} (expected shape {expected[key][3]})")
  for key in sorted(set(state_dict) - set(expected)):
    problems.append(f"unexpected key {key!r} (shape {tuple(np.shape(state_dict[key]))})")
  for key in sorted(set(expected) & set(state_dict)):
    got = tuple(np.shape(state_dict[key]))
    if got != expected[key][3]:
      problems.append(f"shape mismatch for {key!r}: got {got}, "
                      f"expected {expected[key][3]}")
  if problems:
    raise ValueError(
        f"PyTorch state dict does not fit AlexNet variant {variant!r} with "
        f"{num_classes} classes ({len(problems)} problem(s)):\n  "
        + "\n  ".join(problems))

  conv5_channels = expected[TORCH_NAMES["conv5"] + ".bias"][2][0]
  params = {}
  for key, (layer, kind, flax_shape, _) in expected.items():
    value = _to_numpy(state_dict[key])
    if kind == "kernel" and layer.startswith("conv"):
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == "kernel" and layer == "fc6":
      # Rows indexed by c*H*W + h*W + w in PyTorch, (h*W + w)*C + c here.
      out_features, fan_in = value.shape
      side = math.isqrt(fan_in // conv5_channels)
      value = (value.reshape(out_features, conv5_channels, side, side)
               .transpose(2, 3, 1, 0).reshape(fan_in, out_features))
    elif kind == "kernel":
      value = value.T
    params.setdefault(layer, {})[kind] = np.ascontiguousarray(value)
    assert params[layer][kind].shape == flax_shape, (key, flax_shape)
  return params


# --------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------


def load_torch_state_dict(path):
  """Reads a .pth file with torch (weights only); unwraps {"state_dict": ...}."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Reading a PyTorch checkpoint needs torch, which alexnet_jax does not "
        "require otherwise: `pip install torch` (CPU build is enough; see "
        "requirements-dev.txt for the tested version).") from e
  from etils import epath  # pylint: disable=g-import-not-at-top
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"--torch_checkpoint {path!r} does not exist.")
  try:
    with epath.Path(path).open("rb") as f:
      obj = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (torch raises many kinds)
    # torch's own message suggests weights_only=False, which would run code
    # from the file: never do that for a file of unknown origin.
    raise ValueError(
        f"{path!r} is not a PyTorch state dict that loads safely (torch.load with "
        f"weights_only=True failed: {type(e).__name__}: {str(e).splitlines()[0][:150]}). "
        "Save the weights with torch.save(model.state_dict(), PATH).") from None
  for wrapper in ("state_dict", "model_state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
      break
  if not isinstance(obj, dict):
    raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict; "
                     "save `model.state_dict()` instead of the module.")
  return obj


def save_pretrained(workdir, config, params, *, class_names=None, step: int = 0):
  """Writes a params-only checkpoint (plus config.json) that `inference.load` can open.

  The training loop's layout, without optimiser state. A workdir that already
  holds a run or checkpoints is refused: a conversion must never touch a
  training run's files. Returns the checkpoint directory.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import checkpoint, config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  root = workdir_lib.absolute(workdir)
  if workdir_lib.holds_training_run(root) or (root / workdir_lib.CONFIG_FILE).exists():
    raise checkpoint.CheckpointError(
        f"{root} already holds a run (config.json, metrics or checkpoints); converted weights "
        "go into a new directory: pass another --workdir.")
  root.mkdir(parents=True, exist_ok=True)
  config_dict = config_lib.to_dict(config)
  ckpt = checkpoint.Checkpointer(root / workdir_lib.CHECKPOINT_DIR, async_save=False)
  num_classes = int(np.shape(jax.tree.leaves(params)[-1])[-1]) if params else None
  meta = {"config": config_dict, "class_names": list(class_names) if class_names else None,
          "num_classes": config.num_classes or num_classes, "source": "pretrained"}
  ckpt.save(step, params=params, meta=meta, force=True)
  ckpt.wait()
  ckpt.close()
  workdir_lib.write_json_atomic(root / workdir_lib.CONFIG_FILE, config_dict)
  return ckpt.directory


def convert_checkpoint(variant, torch_checkpoint, workdir, *, num_classes=None):
  """Loads a .pth, converts it and writes a pretrained checkpoint to `workdir`.

  Returns the checkpoint directory `save_pretrained` wrote.
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  params = from_torch_state_dict(load_torch_state_dict(torch_checkpoint), variant,
                                 num_classes=num_classes)
  # Each convertible variant has a shipped config of its name: the recipe its PyTorch
  # weights were trained with, which sets the eval preprocessing (torchvision:
  # Resize(256), CenterCrop(224), ImageNet mean/std; seed: Resize((224, 224)), mean/std 0.5).
  config = config_lib.load(variant)
  config.num_classes = int(params["fc8"]["bias"].shape[0])
  if config.num_classes == 1000:
    config.dataset = "imagenet2012"  # ILSVRC-2012 class names for predictions.
  return save_pretrained(workdir, config, params)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags = absl_flags.FLAGS
  try:
    out = convert_checkpoint(flags.variant, flags.torch_checkpoint, flags.workdir,
                             num_classes=flags.num_classes)
  except (checkpoint.CheckpointError, ValueError, FileNotFoundError, ImportError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"Wrote converted {flags.variant} weights to {out}")


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("variant", "torchvision", list(CONVERTIBLE_VARIANTS),
                    "AlexNet variant whose PyTorch weights these are.")
  flags.DEFINE_string("torch_checkpoint", None, "Path to the .pth state dict.")
  flags.DEFINE_string("workdir", None, "Directory to write the Flax checkpoint to.")
  flags.DEFINE_integer("num_classes", None,
                       "Classifier size; default: read from classifier.6.weight.")
  flags.mark_flags_as_required(["torch_checkpoint", "workdir"])


run = cli.absl_command(_define_flags, main)  # The `alexnet-convert` command.


if __name__ == "__main__":
  run()
