"""Export the eval forward pass as a serialized `jax.export` artifact.

    python -m alexnet_jax.export --workdir=DIR --output=model.jax
        [--step=N] [--crops=1|10] [--input=uint8|float] [--separate_params]
        [--platforms=cpu[,cuda,tpu]] [--saved_model=DIR]

What is written: `model.jax`, the function `images -> probabilities` (float32
[b, num_classes], symbolic batch b), which runs with jax alone (no flax, TF or
this package) on the platforms it was exported for (`--platforms`, default
this machine's backend); `model.jax.json`, what a caller needs to prepare
inputs and read outputs (shapes, mean/std, class names, step); and
`alexnet_preprocess.py`, whose `eval_crops(image, info)` makes one image's
input exactly as eval does, with numpy and PIL only. README.md, "Predict and
export", shows how to load and run them.

Inputs: uint8 eval crops [b, S, S, 3], normalised inside (`--input=float`:
already normalised float32 crops), or [b, 10, S, S, 3] with `--crops=10`,
whose softmax outputs are averaged as in eval. The params are baked in as
constants unless `--separate_params` writes them to `model.jax.params.npz`;
then call `exported.call(dict(np.load("model.jax.params.npz")), crops)`.

`--saved_model=DIR` also writes a TF SavedModel for TF Serving >= 2.12 (jax2tf
native serialization), with the params as TF variables and the signature
`serving_default: images -> {"probabilities"}`.
"""

from __future__ import annotations

import functools
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402
from flax import traverse_util  # noqa: E402

from alexnet_jax import cli  # noqa: E402
from alexnet_jax import eval_preprocess  # noqa: E402
from alexnet_jax import workdir as workdir_lib  # noqa: E402

INPUTS = ("uint8", "float")
PREPROCESS_MODULE = "alexnet_preprocess"


def _forward_fn(predictor, input_kind: str):
  """(params, images) -> probabilities, for uint8 crops or normalised floats."""
  from alexnet_jax import evaluation  # pylint: disable=g-import-not-at-top
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  if input_kind == "uint8":
    return functools.partial(inference.forward, predictor.model, predictor.config)

  def forward(params, images):
    return jnp.exp(evaluation.log_probabilities(
        lambda x: predictor.model.apply({"params": params}, x, train=False), images))

  return forward


def _checked(predictor, crops, input_kind) -> tuple[int, int]:
  """(crops per image, crop side) for an export, after checking what the caller asked."""
  if input_kind not in INPUTS:
    raise ValueError(f"input_kind={input_kind!r} is not allowed; choose one of {INPUTS}.")
  return predictor.default_crops(crops), int(predictor.config.image_size)


def export_predictor(predictor, output: str, *, crops: int | None = None,
                     input_kind: str = "uint8", separate_params: bool = False,
                     platforms: tuple[str, ...] | None = None) -> dict:
  """Writes the artifact (and its .json, and .params.npz if separate); returns the info dict."""
  from jax import export  # pylint: disable=g-import-not-at-top
  crops, s = _checked(predictor, crops, input_kind)
  shape = "b, 10, {s}, {s}, 3" if crops == 10 else "b, {s}, {s}, 3"
  dtype = jnp.uint8 if input_kind == "uint8" else jnp.float32
  images_spec = jax.ShapeDtypeStruct(export.symbolic_shape(shape.format(s=s)), dtype)
  forward = _forward_fn(predictor, input_kind)
  host_params = jax.device_get(predictor.params)  # numpy: no device placement baked in.
  if separate_params:
    # {"conv1/kernel": array, ...}: a dict any loader rebuilds with np.load.
    flat = traverse_util.flatten_dict(host_params, sep="/")
    fn = lambda p, images: forward(traverse_util.unflatten_dict(p, sep="/"), images)
    args = ({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}, images_spec)
  else:
    fn = lambda images: forward(host_params, images)
    args = (images_spec,)
  platforms = tuple(platforms) if platforms else (export.default_export_platform(),)
  exported = export.export(jax.jit(fn), platforms=platforms)(*args)

  output = workdir_lib.absolute(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  # Every file goes to a temporary name and is renamed: a killed export leaves
  # the previous artifact whole.
  workdir_lib.write_bytes_atomic(output, exported.serialize())
  info = {
      "format": "jax.export",
      "jax_version": jax.__version__,
      "platforms": list(platforms),
      "input_kind": input_kind,
      "input_shape": ["b"] + ([10] if crops == 10 else []) + [s, s, 3],
      "input_dtype": "uint8" if input_kind == "uint8" else "float32",
      "output": "float32 [b, num_classes] class probabilities"
                + (" (softmax averaged over the 10 crops)" if crops == 10 else ""),
      "crops": crops,
      "image_size": s,
      "resize_size": int(predictor.config.resize_size),
      "eval_resize": str(predictor.config.eval_resize),
      "preprocess": f"{PREPROCESS_MODULE}.py next to this file: eval_crops(image, info)",
      "mean_rgb": [float(v) for v in predictor.config.mean_rgb],
      "std_rgb": [float(v) for v in predictor.config.std_rgb],
      "normalization": "(uint8 - 255 * mean_rgb) / (255 * std_rgb), applied "
                       + ("inside the artifact" if input_kind == "uint8" else "by the caller"),
      "separate_params": bool(separate_params),
      "num_classes": predictor.num_classes,
      "class_names": list(predictor.class_names),
      "variant": str(predictor.config.model.variant),
      "step": predictor.step,
      "checkpoint_dir": predictor.checkpoint_dir,
  }
  if separate_params:
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    workdir_lib.write_bytes_atomic(output.parent / (output.name + ".params.npz"),
                                   buffer.getvalue())
    info["params_file"] = output.name + ".params.npz"
  workdir_lib.write_json_atomic(output.parent / (output.name + ".json"), info)
  # The eval preprocessing in numpy + PIL, for callers without this package.
  workdir_lib.write_text_atomic(output.parent / f"{PREPROCESS_MODULE}.py",
                                epath.Path(eval_preprocess.__file__).read_text())
  return info


def export_saved_model(predictor, directory: str, *, crops: int | None = None,
                       input_kind: str = "uint8",
                       platforms: tuple[str, ...] | None = None) -> str:
  """Writes a TF SavedModel of the same forward pass via jax2tf; returns its directory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  crops, s = _checked(predictor, crops, input_kind)
  image_shape = [None] + ([10] if crops == 10 else []) + [s, s, 3]
  dtype = tf.uint8 if input_kind == "uint8" else tf.float32
  poly = "(b, 10, _, _, _)" if crops == 10 else "(b, _, _, _)"
  tf_forward = jax2tf.convert(
      _forward_fn(predictor, input_kind), with_gradient=False, polymorphic_shapes=[None, poly],
      native_serialization_platforms=tuple(platforms) if platforms else None)
  module = tf.Module()
  # Variables, not constants: a 61M-parameter model as graph constants would
  # approach the 2 GB protobuf limit of the graph.
  module.params = tf.nest.map_structure(tf.Variable, jax.device_get(predictor.params))

  @tf.function(input_signature=[tf.TensorSpec(image_shape, dtype, name="images")],
               autograph=False)
  def serve(images):
    return {"probabilities": tf_forward(module.params, images)}

  module.serve = serve
  directory = os.path.abspath(directory)
  tf.saved_model.save(module, directory, signatures={"serving_default": serve})
  return directory


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  from alexnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.quiet_library_logs()
  if not FLAGS["verbosity"].present:  # Keep stdout/stderr to the answer (and errors).
    absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    predictor = inference.load(FLAGS.workdir, FLAGS.step, devices=jax.local_devices()[:1],
                               use_ema=FLAGS.use_ema)
  except checkpoint.CheckpointError as e:
    raise SystemExit(f"error: {e}") from e
  platforms = tuple(p.strip() for p in FLAGS.platforms.split(",") if p.strip()) or None
  info = export_predictor(predictor, FLAGS.output, crops=int(FLAGS.crops) if FLAGS.crops else None,
                          input_kind=FLAGS.input, separate_params=FLAGS.separate_params,
                          platforms=platforms)
  if FLAGS.saved_model:
    path = export_saved_model(predictor, FLAGS.saved_model,
                              crops=int(FLAGS.crops) if FLAGS.crops else None,
                              input_kind=FLAGS.input, platforms=platforms)
    print(f"Wrote TF SavedModel {path} (signature serving_default: images -> probabilities)")
  print(f"Wrote {FLAGS.output} ({info['variant']}, step {info['step']}, input "
        f"{info['input_dtype']} {info['input_shape']}, platforms {info['platforms']}) and "
        f"{FLAGS.output}.json" + (f" and {FLAGS.output}.params.npz" if FLAGS.separate_params else ""))


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Workdir (or checkpoints/ directory) to export.")
  flags.DEFINE_string("output", None, "Artifact path, e.g. model.jax.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the newest.")
  flags.DEFINE_bool("use_ema", False, "Export the run's moving average of the params "
                    "(trained with config.ema_decay > 0).")
  flags.DEFINE_enum("crops", None, ["1", "10"], "Crops per image; default config.eval_crops.")
  flags.DEFINE_enum("input", "uint8", list(INPUTS),
                    "uint8: eval crops, normalised inside; float: already normalised crops.")
  flags.DEFINE_bool("separate_params", False,
                    "Take params as an argument (written to OUTPUT.params.npz) instead of "
                    "baking them in.")
  flags.DEFINE_string("platforms", "", "Comma-separated platforms to export for (cpu, cuda, "
                      "rocm, tpu); default this machine's default backend.")
  flags.DEFINE_string("saved_model", None, "Also write a TF SavedModel (jax2tf) to this "
                      "directory, for TF Serving.")
  flags.mark_flags_as_required(["workdir", "output"])


run = cli.absl_command(_define_flags, main)  # The `alexnet-export` command.


if __name__ == "__main__":
  run()
