"""notebooks/restore_in_colab.ipynb runs top to bottom, as on a CPU-only Colab.

Executed with nbclient in a python3 kernel on ONE CPU device, twice: on a
zip of the 8-device quickstart run the inference tests share (the run's
numbers must come out), and on torchvision-layout weights saved by the test
(the "start from torchvision's pretrained AlexNet" path, offline). Any cell
error fails the test.
"""

import os
import shutil

import pytest

from alexnet_jax import workdir as workdir_lib
from tests import inference_testlib as testlib

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow
NOTEBOOK = testlib.REPO_ROOT / "notebooks" / "restore_in_colab.ipynb"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_data_dir):
  return testlib.trained_digits(str(tmp_path_factory.getbasetemp()), tfds_data_dir)


def execute(env: dict, cwd) -> str:
  """Runs the notebook with these environment variables; returns its printed text."""
  for key, value in env.items():
    os.environ[key] = value
  try:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()  # Raises CellExecutionError on the first failing cell.
  finally:
    for key in env:
      os.environ.pop(key, None)
  return "\n".join("".join(out.get("text", "") for out in cell.get("outputs", [])
                           if out.get("output_type") == "stream")
                   for cell in nb.cells if cell.cell_type == "code")


BASE_ENV = {"MPLBACKEND": "Agg", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "PYTHONPATH": str(testlib.REPO_ROOT)}


def test_notebook_restores_a_zipped_run_and_reports_it(workdir, tmp_path):
  images = testlib.write_image_files(tmp_path, testlib.digits_test_images(2)[0])
  archive = shutil.make_archive(str(tmp_path / "run"), "zip", root_dir=workdir)
  out = execute(dict(BASE_ENV, ALEXNET_JAX_WORKDIR=archive,
                     ALEXNET_JAX_IMAGES=os.pathsep.join(images)), tmp_path)
  assert "Not on Colab" in out
  assert "Restored step 8 of a 'small' AlexNet (10 classes, dataset 'sklearn_digits')" in out
  assert "onto 1 cpu device(s)" in out
  logged = [r for r in workdir_lib.read_metrics(workdir) if "eval_top1" in r][-1]
  # The whole split (360 < MAX_EVAL_EXAMPLES) scored in the notebook = the run's own eval.
  assert f"Scored 360 validation examples: top-1 {logged['eval_top1']:.4f}" in out
  assert f"Last logged eval (step 8): top-1 {logged['eval_top1']:.4f}" in out
  assert "Most frequent confusions" in out
  for path in images:
    assert path in out


def test_notebook_starts_from_torchvision_weights(tmp_path, flowers):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_alexnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  weights = tmp_path / "alexnet.pth"
  torch.save(torch_alexnet.build("torchvision", 1000).state_dict(), weights)
  image = str(sorted(flowers.glob("val/*/*.jpg"))[0])
  out = execute(dict(BASE_ENV, ALEXNET_JAX_WORKDIR="torchvision",
                     ALEXNET_JAX_TORCH_WEIGHTS=str(weights), ALEXNET_JAX_IMAGES=image), tmp_path)
  assert "Restored step 0 of a 'torchvision' AlexNet (1000 classes, dataset 'imagenet2012')" in out
  assert "No validation data here" in out
  assert image in out and "(n0" in out  # ImageNet class names with their synsets
