"""Shared by the inference, predict, export and notebook tests: one tiny trained run.

Training is the slow part of these tests, so `trained_digits` runs it once per
test session (`helpers.shared_run`: the pytest-xdist workers share it). The run
is the real quickstart (the `small` AlexNet on scikit-learn's digits, a real
dataset that builds offline) cut to 8 steps, on the test process's 8 simulated
devices (in process: the fixture of fast tests), with
checkpoints at steps 4 and 8 and an eval at step 8.
"""

import pathlib

import numpy as np

from tests.helpers import shared_run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_STEPS = 8


def trained_digits(basetemp: str, tfds_data_dir: str) -> str:
  """Workdir of an 8-step quickstart run on 8 devices (checkpoints at 4 and 8)."""
  return str(shared_run(basetemp, "digits_run", f"--config.num_train_steps={TRAIN_STEPS}",
                        "--config.eval_every_steps=8", "--config.checkpoint_every_steps=4",
                        "--config.log_every_steps=4", f"--config.tfds_data_dir={tfds_data_dir}",
                        config="configs/quickstart.py", in_process=True))


def digits_test_images(n):
  """The first n raw test-split digits: uint8 [n, 8, 8, 1] greyscale, and labels."""
  from alexnet_jax.data import sklearn_digits  # pylint: disable=g-import-not-at-top
  images, labels, _ = sklearn_digits.load_split_arrays()["test"]
  return images[:n], labels[:n]


def write_image_files(directory, images):
  """Writes images as alternating PNG and JPEG files; returns their paths."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths = []
  for i, image in enumerate(images):
    path = pathlib.Path(directory) / f"digit_{i}.{'png' if i % 2 == 0 else 'jpg'}"
    Image.fromarray(np.asarray(image)[..., 0] if image.shape[-1] == 1 else image).save(path)
    paths.append(str(path))
  return paths
