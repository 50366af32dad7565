"""Classify image files with a trained checkpoint; prints the top-k classes of each.

    python -m alexnet_jax.predict --workdir=DIR IMAGE [IMAGE ...]
        [--step=N] [--crops=1|10] [--top_k=5] [--batch_size=64]

Output, per image:

    path/to/daisy.jpg
      0.9312  daisy
      0.0411  dandelion
      ...

Files are read as encoded bytes and decoded by the same TF ops the eval
pipeline uses, so the probabilities equal what eval computes for that file.
`--crops` defaults to the run's config.eval_crops (10 = the paper's
four-corner-and-centre crops and their mirror images, softmax averaged).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from etils import epath  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import cli  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("workdir", None, "Workdir (or checkpoints/ directory) to restore.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the newest.")
  flags.DEFINE_enum("crops", None, ["1", "10"], "1: centre crop; 10: paper's 10 crops. "
                    "Default: the run's config.eval_crops.")
  flags.DEFINE_integer("top_k", 5, "Classes to print per image.")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
  flags.DEFINE_bool("use_ema", False, "Use the run's moving average of the params "
                    "(trained with config.ema_decay > 0).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give one or more image files after the flags, e.g. "
                         "`python -m alexnet_jax.predict --workdir=DIR cat.jpg`.")
  for path in paths:
    if why := _not_an_image_file(path):
      raise SystemExit(f"error: {path} {why}")
  if FLAGS.top_k < 1:
    raise app.UsageError(f"--top_k={FLAGS.top_k} must be >= 1.")
  if FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size={FLAGS.batch_size} must be >= 1.")
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top
  from alexnet_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.quiet_library_logs()
  if not FLAGS["verbosity"].present:  # stdout: the answer; stderr: warnings and errors.
    absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    predictor = inference.load(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.use_ema)
  except checkpoint.CheckpointError as e:
    raise SystemExit(f"error: {e}") from e
  crops = int(FLAGS.crops) if FLAGS.crops else None
  batches = []
  for path in paths:  # One file at a time: TF's decode errors name no file.
    data = epath.Path(path).read_bytes()
    try:
      batches.append(predictor.preprocess([data], crops=crops))
    except Exception as e:  # pylint: disable=broad-except
      raise SystemExit(f"Could not decode {path} as an image (JPEG, PNG, GIF or BMP): "
                       f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
  probs = predictor.predict_crops(np.concatenate(batches), batch_size=FLAGS.batch_size)
  for path, p in zip(paths, probs):
    print(path)
    for name, prob in predictor.top_k(p, FLAGS.top_k):
      print(f"  {prob:.4f}  {name}")
  sys.stdout.flush()


def _not_an_image_file(path: str) -> str | None:
  """Why `path` cannot be read as an image file, or None."""
  scheme = path.split("://", 1)[0] if "://" in path else None
  if scheme not in (None, "gs", "s3", "file"):
    return (f"is a {scheme}:// URL: predict reads local files and gs:// or s3:// paths; "
            "download it first (e.g. with curl -O).")
  p = epath.Path(path)
  if p.is_dir():
    return "is a directory: give the image files in it (e.g. DIR/*.jpg)."
  if not p.is_file():
    return "is not a file."
  return None


run = cli.absl_command(_define_flags, main)  # The `alexnet-predict` command.


if __name__ == "__main__":
  run()
