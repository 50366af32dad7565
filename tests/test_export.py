"""`alexnet_jax.export`: a jax.export artifact that runs without this package, equal to predict.

The artifact is loaded in a fresh interpreter started in isolated mode (`-I`,
so neither the repository nor PYTHONPATH is importable) from a directory
outside the repository, and the script asserts that `alexnet_jax` was never
imported: only jax and numpy run it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import export as export_lib
from alexnet_jax import inference
from tests import inference_testlib as testlib

LOADER = r'''
import json, sys
import numpy as np
from jax import export

def run(path, inputs):
  with open(path, "rb") as f:
    exported = export.deserialize(bytearray(f.read()))
  info = json.load(open(path + ".json"))
  if info["separate_params"]:
    params = dict(np.load(path + ".params.npz"))
    return np.asarray(exported.call(params, inputs))
  return np.asarray(exported.call(inputs))

data = np.load(sys.argv[1])
out = {}
for name in ("baked", "separate"):
  for size in (3, 5):  # the batch dimension is symbolic
    out[f"{name}_{size}"] = run(sys.argv[2 if name == "baked" else 3], data[name][:size])
assert "alexnet_jax" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
np.savez(sys.argv[4], **out)
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_data_dir):
  return testlib.trained_digits(str(tmp_path_factory.getbasetemp()), tfds_data_dir)


@pytest.mark.slow
def test_exported_forward_runs_without_alexnet_jax_and_equals_predict(workdir, tmp_path):
  # The CLI writes the self-contained artifact: 10 uint8 crops in, params baked in.
  baked = tmp_path / "baked" / "model.jax"
  env = dict(os.environ, PYTHONPATH=str(testlib.REPO_ROOT))
  proc = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.export", f"--workdir={workdir}", f"--output={baked}",
       "--crops=10"], env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((tmp_path / "baked" / "model.jax.json").read_text())
  assert info["input_shape"] == ["b", 10, 32, 32, 3] and info["input_dtype"] == "uint8"
  assert info["class_names"] == [str(i) for i in range(10)] and info["step"] == 8

  # In-process: params passed alongside, already normalised float centre crops in.
  predictor = inference.load(workdir)
  separate = tmp_path / "separate" / "model.jax"
  info = export_lib.export_predictor(predictor, str(separate), crops=1, input_kind="float",
                                     separate_params=True)
  assert info["input_shape"] == ["b", 32, 32, 3] and info["input_dtype"] == "float32"
  assert os.path.exists(str(separate) + ".params.npz")

  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (30 + i, 40 - i, 3), dtype=np.uint8) for i in range(5)]
  ten = predictor.preprocess(images, crops=10)
  centre = predictor.preprocess(images, crops=1)
  mean = np.asarray(predictor.config.mean_rgb) * 255
  std = np.asarray(predictor.config.std_rgb) * 255
  normalised = ((centre - mean) / std).astype(np.float32)
  np.savez(tmp_path / "inputs.npz", baked=ten, separate=normalised)

  script = tmp_path / "load_exported.py"
  script.write_text(LOADER)
  clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-I", str(script), str(tmp_path / "inputs.npz"), str(baked),
       str(separate), str(tmp_path / "outputs.npz")],
      cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.load(tmp_path / "outputs.npz")

  expected_ten = predictor.predict(images, crops=10)
  expected_centre = predictor.predict(images, crops=1)
  for size in (3, 5):
    np.testing.assert_allclose(out[f"baked_{size}"], expected_ten[:size], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[f"separate_{size}"], expected_centre[:size], atol=1e-5,
                               rtol=0)
  assert not np.allclose(expected_ten, expected_centre, atol=1e-5)  # the two paths differ

  # The README's snippet: photos prepared by the copied numpy + PIL module, fed to the
  # artifact, in a process without this package, give predict's probabilities.
  photos = [str(p) for p in sorted(testlib.REPO_ROOT.glob("tests/data/flowers/val/*/*.jpg"))[:4]]
  (tmp_path / "photos.json").write_text(json.dumps(photos))
  (tmp_path / "readme_snippet.py").write_text(README_SNIPPET)
  proc = subprocess.run(
      [sys.executable, "-I", str(tmp_path / "readme_snippet.py"), str(baked),
       str(tmp_path / "photos.json"), str(tmp_path / "photo_probs.npy")],
      cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_allclose(np.load(tmp_path / "photo_probs.npy"),
                             predictor.predict(photos, crops=10), atol=1e-4, rtol=0)


README_SNIPPET = r'''
import json, os, sys
import numpy as np
from jax import export
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # where export wrote alexnet_preprocess.py
from alexnet_preprocess import eval_crops

exported = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
info = json.load(open(sys.argv[1] + ".json"))
crops = np.stack([eval_crops(path, info) for path in json.load(open(sys.argv[2]))])
probs = np.asarray(exported.call(crops))
assert "alexnet_jax" not in sys.modules and "tensorflow" not in sys.modules
np.save(sys.argv[3], probs)
'''


TF_LOADER = r'''
import sys
import numpy as np
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
crops = np.load(sys.argv[1])
out = {f"size_{n}": serve(images=tf.constant(crops[:n]))["probabilities"].numpy() for n in (3, 5)}
assert "alexnet_jax" not in sys.modules and "flax" not in sys.modules
np.savez(sys.argv[3], **out)
'''


@pytest.mark.slow
def test_tf_saved_model_runs_without_alexnet_jax_and_equals_predict(workdir, tmp_path):
  pytest.importorskip("tensorflow")
  predictor = inference.load(workdir)
  saved = export_lib.export_saved_model(predictor, str(tmp_path / "saved_model"), crops=1)
  images = [np.random.default_rng(i).integers(0, 256, (33, 41, 3), dtype=np.uint8)
            for i in range(5)]
  np.save(tmp_path / "crops.npy", predictor.preprocess(images, crops=1))
  script = tmp_path / "load_saved_model.py"
  script.write_text(TF_LOADER)
  clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run(
      [sys.executable, "-I", str(script), str(tmp_path / "crops.npy"), saved,
       str(tmp_path / "out.npz")],
      cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  expected = predictor.predict(images, crops=1)
  for n in (3, 5):
    np.testing.assert_allclose(out[f"size_{n}"], expected[:n], atol=1e-5, rtol=0)


def test_bad_arguments(workdir):
  predictor = inference.load(workdir)
  with pytest.raises(ValueError, match="input_kind='bytes'"):
    export_lib.export_predictor(predictor, "/tmp/unused.jax", input_kind="bytes")
  with pytest.raises(ValueError, match="crops=3"):
    export_lib.export_predictor(predictor, "/tmp/unused.jax", crops=3)
