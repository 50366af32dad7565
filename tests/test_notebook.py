"""notebooks/restore_in_colab.ipynb runs top to bottom against a freshly trained run.

Executed with nbclient in a python3 kernel on ONE CPU device (as on a CPU-only
Colab), restoring the 8-device quickstart run that the inference tests share.
Any cell error fails the test; the printed numbers are checked against the run.
"""

import os

import pytest

from alexnet_jax import metrics as metrics_lib
from tests import inference_testlib as testlib

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = testlib.REPO_ROOT / "notebooks" / "restore_in_colab.ipynb"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tfds_data_dir):
  return testlib.trained_digits(str(tmp_path_factory.getbasetemp()), tfds_data_dir)


def _kernel_name():
  """python3, from an installed spec or ipykernel's built-in one (always there with ipykernel)."""
  from jupyter_client import kernelspec  # pylint: disable=g-import-not-at-top
  if "python3" not in kernelspec.KernelSpecManager().find_kernel_specs():
    pytest.importorskip("ipykernel")
  return "python3"


def _text(cell):
  return "".join(out.get("text", "") for out in cell.get("outputs", [])
                 if out.get("output_type") == "stream")


def test_notebook_runs_and_reports_the_run(workdir, tmp_path, monkeypatch):
  images = testlib.write_image_files(tmp_path, testlib.digits_test_images(2)[0])
  monkeypatch.setenv("ALEXNET_JAX_WORKDIR", workdir)
  monkeypatch.setenv("ALEXNET_JAX_REPO", str(testlib.REPO_ROOT))
  monkeypatch.setenv("ALEXNET_JAX_IMAGES", os.pathsep.join(images))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.delenv("PYTHONPATH", raising=False)  # the setup cell must find the code

  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=600, kernel_name=_kernel_name(),
      resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # Raises CellExecutionError on the first failing cell.

  out = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
  assert "Not on Colab" in out
  assert "Restored step 8 of a 'small' AlexNet (10 classes, dataset 'sklearn_digits')" in out
  assert "onto 1 cpu device(s)" in out
  logged = [r for r in metrics_lib.read_metrics(workdir) if "eval_top1" in r][-1]
  # The whole split (360 < MAX_EVAL_EXAMPLES) scored in the notebook = the run's own eval.
  assert f"Scored 360 validation examples: top-1 {logged['eval_top1']:.4f}" in out
  assert f"Last logged eval (step 8): top-1 {logged['eval_top1']:.4f}" in out
  assert "Most frequent confusions" in out
  for path in images:
    assert path in out
