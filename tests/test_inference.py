"""inference.load / Predictor: exact eval preprocessing, device-count independence, errors.

References are independent of the code under test: the eval input pipeline's
own batches and the metrics the training run logged, crops cut by hand with
numpy slices, a forward pass written out here with params read by plain
Orbax, and PyTorch for weights that went through the converter.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import checkpoint as ckpt_lib
from alexnet_jax import config_lib
from alexnet_jax import convert
from alexnet_jax import inference
from alexnet_jax import data
from alexnet_jax import workdir as workdir_lib
from tests import inference_testlib as testlib
from tests.helpers import run_main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_data_dir):
  return testlib.trained_digits(str(tmp_path_factory.getbasetemp()), tfds_data_dir)


@pytest.fixture(scope="module")
def predictor(workdir):
  return inference.load(workdir)


def raw_restore(workdir, step=None):
  """Params and config read with plain Orbax onto the default device (no sharding given)."""
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  step = ckpt.latest_step() if step is None else step
  params, _, meta = ckpt.restore(step, abstract_params=ckpt.stored_shapes(step))
  ckpt.close()
  return jax.device_get(params), ml_collections.ConfigDict(meta["config"]), meta


def reference_probs(workdir, crops, step=None):
  """softmax(model(normalised crops)) averaged over crops: [K, S, S, 3] -> [classes]."""
  params, config, meta = raw_restore(workdir, step)
  model = config_lib.create_model(config, meta["num_classes"])
  mean = np.asarray(config.mean_rgb, np.float64) * 255
  std = np.asarray(config.std_rgb, np.float64) * 255
  x = ((np.asarray(crops, np.float64) - mean) / std).astype(np.float32)
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(x), train=False), np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).mean(0)


@pytest.mark.slow
def test_preprocessing_is_exactly_the_eval_pipelines(predictor):
  """The raw test digits, preprocessed by predict, are the eval pipeline's crops byte for byte."""
  images, _ = testlib.digits_test_images(360)
  ours = predictor.preprocess(images)
  assert ours.shape == (360, 32, 32, 3) and ours.dtype == np.uint8
  theirs = []
  for batch in data.create_eval_iterator(predictor.config):
    theirs.extend(batch["image"][batch["mask"]])
  assert len(theirs) == 360
  # TFDS stores the split in its own order: compare as multisets of images.
  assert sorted(x.tobytes() for x in ours) == sorted(x.tobytes() for x in theirs)


def test_predictions_reproduce_the_logged_eval_metrics(predictor, workdir):
  top1 = nll = count = 0.0
  for batch in data.create_eval_iterator(predictor.config):
    probs = predictor.predict_crops(batch["image"])
    mask = batch["mask"]
    labels = batch["label"][mask]
    probs = probs[mask]
    top1 += (probs.argmax(-1) == labels).sum()
    nll += -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-30)).sum()
    count += mask.sum()
  logged = [r for r in workdir_lib.read_metrics(workdir) if "eval_top1" in r][-1]
  assert logged["step"] == testlib.TRAIN_STEPS == predictor.step
  assert count == logged["eval_examples"] == 360
  assert top1 / count == pytest.approx(logged["eval_top1"], abs=1e-9)
  assert nll / count == pytest.approx(logged["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_centre_and_ten_crops_match_a_hand_computed_forward(predictor, workdir):
  # 32 x 40 with resize_size 32: no resize, so the crops are plain numpy slices.
  assert predictor.config.resize_size == predictor.config.image_size == 32
  image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
  centre = image[:, 4:36]
  corners = [image[:, :32], image[:, 8:], image[:, :32], image[:, 8:], centre]
  ten = np.stack(corners + [c[:, ::-1] for c in corners])
  np.testing.assert_array_equal(predictor.preprocess(image, crops=10)[0], ten)

  np.testing.assert_allclose(predictor.predict(image, crops=1)[0],
                             reference_probs(workdir, centre[None]), atol=1e-5)
  np.testing.assert_allclose(predictor.predict(image, crops=10)[0],
                             reference_probs(workdir, ten), atol=1e-5)
  # Default: config.eval_crops (1 in the quickstart).
  np.testing.assert_array_equal(predictor.predict(image), predictor.predict(image, crops=1))


def test_greyscale_alpha_lists_and_batches_agree(predictor):
  rng = np.random.default_rng(1)
  grey = rng.integers(0, 256, (45, 37), dtype=np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  rgba = np.concatenate([rgb, rng.integers(0, 256, (45, 37, 1), dtype=np.uint8)], -1)
  other = rng.integers(0, 256, (20, 64, 3), dtype=np.uint8)
  probs = predictor.predict([grey, grey[..., None], rgb, rgba, other], batch_size=2)
  assert probs.shape == (5, 10) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  for p in probs[1:4]:
    np.testing.assert_array_equal(p, probs[0])
  # A [N, H, W, C] batch is N images; chunking does not change results.
  batch = np.stack([rgb, rgb[::-1]])
  np.testing.assert_allclose(predictor.predict(batch, batch_size=1),
                             predictor.predict(list(batch)), atol=1e-6)
  np.testing.assert_allclose(predictor.predict(batch)[0], probs[2], atol=1e-6)


@pytest.mark.slow
def test_restores_8_device_checkpoint_on_1_device(predictor, workdir, tmp_path):
  images = np.random.default_rng(2).integers(0, 256, (3, 30, 34, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  script = (
      "import json, sys, numpy as np, jax\n"
      "from alexnet_jax import inference\n"
      "p = inference.load(sys.argv[1])\n"
      "leaf = jax.tree.leaves(p.params)[0]\n"
      "probs = p.predict(np.load(sys.argv[2]), crops=10)\n"
      "print(json.dumps({'devices': jax.device_count(), 'param_devices': len(leaf.devices()),\n"
      "                  'probs': probs.tolist()}))\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=str(testlib.REPO_ROOT))
  proc = subprocess.run([sys.executable, "-c", script, workdir, str(tmp_path / "images.npy")],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 1 and out["param_devices"] == 1
  assert jax.device_count() == 8 and len(jax.tree.leaves(predictor.params)[0].devices()) == 8
  np.testing.assert_allclose(out["probs"], predictor.predict(images, crops=10), atol=1e-5)


@pytest.mark.slow
def test_restores_1_device_checkpoint_on_8_devices(tmp_path):
  workdir = str(tmp_path / "one_device")
  proc = run_main(workdir, config="configs/default.py:tiny", devices=1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  loaded = inference.load(workdir)
  assert loaded.step == 4 and loaded.num_classes == 10
  leaves = jax.tree.leaves(loaded.params)
  assert all(len(x.devices()) == 8 and x.sharding.is_fully_replicated for x in leaves)
  raw, _, _ = raw_restore(workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), raw)
  image = np.random.default_rng(3).integers(0, 256, (36, 36, 3), dtype=np.uint8)
  np.testing.assert_allclose(loaded.predict(image)[0],
                             reference_probs(workdir, image[2:34, 2:34][None]), atol=1e-5)
  assert loaded.class_names == [str(i) for i in range(10)]  # the fake dataset's names


def test_step_selection(workdir, predictor):
  assert inference.available_steps(workdir) == [4, 8]
  assert predictor.step == 8
  early = inference.load(workdir, step=4)
  assert early.step == 4
  via_dir = inference.load(os.path.join(workdir, "checkpoints", "4"))
  assert via_dir.step == 4
  assert inference.load(os.path.join(workdir, "checkpoints")).step == 8
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(via_dir.params),
               jax.device_get(early.params))
  a, b = jax.tree.leaves(jax.device_get(early.params))[0], jax.tree.leaves(
      jax.device_get(predictor.params))[0]
  assert not np.array_equal(a, b)
  assert predictor.class_names == [str(i) for i in range(10)]  # the dataset's names
  assert predictor.config.model.variant == "small" and predictor.config.dataset == "sklearn_digits"


def test_clear_errors(workdir, predictor, tmp_path, monkeypatch):
  with pytest.raises(ckpt_lib.CheckpointError, match="does not exist"):
    inference.load(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ckpt_lib.CheckpointError, match="No checkpoint found"):
    inference.load(tmp_path / "empty")
  with pytest.raises(ckpt_lib.CheckpointError, match=r"Step 5 .*available steps: \[4, 8\]"):
    inference.load(workdir, step=5)
  with pytest.raises(ValueError, match="dtype float32.*uint8"):
    predictor.predict(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"shape \(8, 8, 5\)"):
    predictor.predict(np.zeros((8, 8, 5), np.uint8))
  with pytest.raises(ValueError, match="crops=3"):
    predictor.predict(np.zeros((8, 8, 3), np.uint8), crops=3)

  # A checkpoint written by a future format version is refused by name.
  config = ml_collections.ConfigDict(predictor.config.to_dict())
  monkeypatch.setattr(ckpt_lib, "FORMAT_VERSION", 99)
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  convert.save_pretrained(str(tmp_path / "future"), config, jax.device_get(predictor.params))
  assert ocp.type_handlers.get_type_handler(jax.Array) is handler  # Orbax globals: training's
  monkeypatch.undo()
  with pytest.raises(ckpt_lib.CheckpointError, match="format_version=99"):
    inference.load(tmp_path / "future")


def test_pretrained_checkpoint_from_the_torch_converter(tmp_path):
  """convert.py's checkpoint (seed variant, 4 classes) predicts what PyTorch does."""
  torch = pytest.importorskip("torch")
  from tests.test_convert import torch_model  # The torchvision-layout reference net.

  ref = torch_model("seed", 4)
  pth = tmp_path / "seed.pth"
  torch.save(ref.state_dict(), pth)
  convert.convert_checkpoint("seed", str(pth), str(tmp_path / "converted"))
  loaded = inference.load(tmp_path / "converted")
  assert loaded.step == 0 and loaded.num_classes == 4
  assert loaded.class_names == ["class_0", "class_1", "class_2", "class_3"]
  # The seed's own eval recipe: the whole image stretched to 224x224, mean/std 0.5.
  assert loaded.default_crops() == 1 and loaded.config.eval_resize == "stretch"
  assert tuple(loaded.config.mean_rgb) == (0.5, 0.5, 0.5)
  image = np.random.default_rng(4).integers(0, 256, (256, 300, 3), dtype=np.uint8)
  crop = loaded.preprocess(image)[0]
  assert crop.shape == (224, 224, 3)
  mean = np.asarray(loaded.config.mean_rgb) * 255
  std = np.asarray(loaded.config.std_rgb) * 255
  x = torch.from_numpy(((crop - mean) / std).astype(np.float32).transpose(2, 0, 1)[None])
  with torch.no_grad():
    expected = torch.softmax(ref(x), -1).numpy()[0]
  np.testing.assert_allclose(loaded.predict(image)[0], expected, atol=1e-5)


@pytest.mark.slow
def test_converted_torchvision_weights_evaluate_like_torchvision(tmp_path):
  """Resize(256), CenterCrop(224), ImageNet mean/std, one crop, unless asked for ten."""
  torch = pytest.importorskip("torch")
  from tests.test_convert import torch_model

  torch.save(torch_model("torchvision", 3).state_dict(), tmp_path / "tv.pth")
  convert.convert_checkpoint("torchvision", str(tmp_path / "tv.pth"), str(tmp_path / "tv"))
  loaded = inference.load(tmp_path / "tv")
  config = loaded.config
  assert loaded.default_crops() == 1
  assert (config.resize_size, config.image_size, config.eval_resize) == (256, 224, "shorter_side")
  assert tuple(config.mean_rgb) == config_lib.IMAGENET_MEAN_RGB
  image = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
  assert loaded.preprocess(image).shape == (1, 224, 224, 3)
  assert loaded.predict(image, crops=10).shape == (1, 3)


def test_imagenet_class_names_are_readable():
  names = inference.imagenet_readable_names()
  if names is None:
    pytest.skip("this tensorflow_datasets does not ship the ImageNet label files")
  assert len(names) == 1000 and names["n01440764"] == "tench"
  assert names["n15075141"] == "toilet tissue"
  synsets = list(names)
  shown = inference._display_class_names(synsets, 1000, "imagenet2012")
  assert shown[0] == "tench (n01440764)" and shown[1] == "goldfish (n01443537)"
  # Converted ImageNet weights carry no names: ILSVRC-2012 order is assumed.
  assert inference._display_class_names(None, 1000, "imagenet2012") == shown
  assert inference._display_class_names(["a", "b"], 2, "imagefolder") == ["a", "b"]
  assert inference._display_class_names(None, 3, "fake") == ["class_0", "class_1", "class_2"]
