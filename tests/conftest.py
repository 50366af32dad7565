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
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FLOWERS_MINI = REPO_ROOT.parent / "shared" / "data" / "flowers-mini"


@pytest.fixture(scope="session")
def flowers_mini():
  """The real flower JPEGs shipped in ../shared; tests using it skip without it."""
  if not (FLOWERS_MINI / "train").is_dir():
    pytest.skip(f"flowers-mini not found at {FLOWERS_MINI}")
  return FLOWERS_MINI


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so shipped datasets are built once."""
  return str(tmp_path_factory.mktemp("tfds"))
