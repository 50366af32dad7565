"""`python -m alexnet_jax.predict`: top-k per image file, equal to Predictor.predict."""

import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import inference
from tests import inference_testlib as testlib


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_data_dir):
  return testlib.trained_digits(str(tmp_path_factory.getbasetemp()), tfds_data_dir)


def run_predict(*args):
  env = dict(os.environ, PYTHONPATH=str(testlib.REPO_ROOT))
  return subprocess.run([sys.executable, "-m", "alexnet_jax.predict", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def parse(stdout):
  """{path: [(name, prob), ...]} from the CLI's output."""
  out, current = {}, None
  for line in stdout.splitlines():
    if not line.startswith("  "):
      current = line
      out[current] = []
    else:
      prob, name = line.split(maxsplit=1)
      out[current].append((name, float(prob)))
  return out


@pytest.mark.slow
def test_prints_top_k_of_each_file(workdir, tmp_path):
  images, _ = testlib.digits_test_images(3)
  paths = testlib.write_image_files(tmp_path, images)  # PNG, JPEG, PNG
  proc = run_predict(f"--workdir={workdir}", "--crops=10", "--top_k=3", *paths)
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = parse(proc.stdout)
  assert list(printed) == paths

  predictor = inference.load(workdir)
  expected = predictor.predict(paths, crops=10)  # the files' bytes, as the CLI reads them
  for path, probs in zip(paths, expected):
    rows = printed[path]
    assert len(rows) == 3
    order = np.argsort(-probs)[:3]
    assert [name for name, _ in rows] == [predictor.class_names[i] for i in order]
    np.testing.assert_allclose([p for _, p in rows], probs[order], atol=6e-5)


@pytest.mark.slow
def test_errors_are_messages_not_tracebacks(workdir, tmp_path):
  proc = run_predict(f"--workdir={workdir}")
  assert proc.returncode != 0 and "Give one or more image files" in proc.stderr
  proc = run_predict(f"--workdir={workdir}", str(tmp_path / "missing.png"))
  assert proc.returncode != 0 and "missing.png is not a file" in proc.stderr
  # A directory or a URL: one line each, no usage text, no traceback.
  for path, why in ((tmp_path, "is a directory: give the image files in it"),
                    ("https://example.com/cat.jpg", "is a https:// URL")):
    proc = run_predict(f"--workdir={workdir}", str(path))
    assert proc.returncode != 0 and why in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
  image = testlib.write_image_files(tmp_path, testlib.digits_test_images(1)[0])[0]
  proc = run_predict(f"--workdir={workdir}", "--step=5", image)
  assert proc.returncode != 0
  assert "Step 5 is not in" in proc.stderr and "available steps: [4, 8]" in proc.stderr
  assert "Traceback" not in proc.stderr
