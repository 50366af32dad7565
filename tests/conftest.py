"""Test-wide setup: 8 simulated CPU devices, TF kept off accelerators, shared paths.

The device count must be fixed before JAX initialises its backends, so it is set
here (pytest imports conftest first). Tests that need a single device use a
one-device mesh; tests that need several use the 8 simulated ones.
"""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs on the CPU even on a GPU machine (it never lands there by accident).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# The training loop promises no per-step host sync: under tests (and in the training
# processes they start) an implicit host<->device transfer in it fails the run.
os.environ["ALEXNET_JAX_LOOP_TRANSFER_GUARD"] = "disallow"

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FLOWERS = REPO_ROOT / "tests" / "data" / "flowers"



@pytest.fixture(scope="session")
def flowers():
  """25 real flower photos shipped with the tests: train/<class>/*.jpg (3 each), val/ (2 each)."""
  return FLOWERS


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so shipped datasets are built once."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory):
  """`main.py --config=default:tiny` on 2 devices (fake data, 4 steps, checkpoints at 2 and
  4), trained once per session. Read it, or copy it before changing it."""
  from tests.helpers import shared_run  # pylint: disable=g-import-not-at-top
  return shared_run(tmp_path_factory.getbasetemp(), "finished_tiny_run")


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory, tfds_data_dir):
  """The offline digits prepared at the `default:tiny` config's size (36 px, 10 classes)."""
  from alexnet_jax import config_lib, prepare  # pylint: disable=g-import-not-at-top
  c = config_lib.load("default:tiny")
  c.dataset, c.tfds_data_dir = "sklearn_digits", tfds_data_dir
  out = tmp_path_factory.mktemp("prepared_digits")
  prepare.prepare(c, out)
  return out
