"""docs/extending.md's recipes, run as written: each block of code is executed in
the module it says to edit, and the new name is then selected by config alone.

If a recipe stops working (a registry renamed, a signature changed, a name
listed in a second place), this fails before a reader finds out.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import config_lib, data, optim
from alexnet_jax.data import sources
from alexnet_jax.models import alexnet
from tests.conftest import FLOWERS, REPO_ROOT

DOC = (REPO_ROOT / "docs" / "extending.md").read_text()


def _block(heading_start: str) -> str:
  """The first python block under the `## ` heading that starts with `heading_start`."""
  section = DOC.split(f"\n## {heading_start}", 1)[1].split("\n## ", 1)[0]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _exec_in(module, code, registry, name):
  """Runs `code` as if written at the end of `module`; removes `name` from `registry` after."""
  namespace = dict(vars(module))
  exec(compile(code, f"docs/extending.md ({module.__name__})", "exec"), namespace)  # pylint: disable=exec-used
  assert name in registry
  return namespace


@pytest.mark.slow
def test_a_new_variant_is_selected_by_config():
  try:
    _exec_in(alexnet, _block("A model variant"), alexnet.ARCHITECTURES, "wide_seed")
    c = config_lib.load("seed")
    c.model.variant = "wide_seed"
    config_lib.validate(c, num_devices=1)
    assert "'wide_seed'" in config_lib.help_text()
    model = config_lib.create_model(c, 5)
    params = alexnet.init_params(model, 224, jax.random.key(0))
    logits = model.apply({"params": params}, jnp.zeros((1, 224, 224, 3)), train=False)
    assert logits.shape == (1, 5) and params["conv1"]["kernel"].shape == (11, 11, 3, 96)
  finally:
    alexnet.ARCHITECTURES.pop("wide_seed", None)
  with pytest.raises(ValueError, match="wide_seed"):
    config_lib.validate(c, num_devices=1)


def test_a_new_optimizer_and_schedule_are_selected_by_config():
  try:
    _exec_in(optim, _block("An optimizer"), optim.OPTIMIZER_BUILDERS, "lion")
    _exec_in(optim, _block("A learning-rate schedule"), optim.SCHEDULE_BUILDERS, "exponential")
    c = config_lib.load("seed")
    c.optimizer, c.lr_schedule, c.warmup_epochs = "lion", "exponential", 1.0
    config_lib.validate(c, num_devices=1)
    lr = optim.create_learning_rate_fn(c, steps_per_epoch=10)
    base = optim.base_learning_rate(c)
    np.testing.assert_allclose([lr(5), lr(10), lr(20)], [base / 2, base, base * 0.95], rtol=1e-6)
    tx = optim.create_optimizer(c)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.array([1.0, -2.0, 0.0])}, tx.init(params), params)
    assert np.all(np.isfinite(np.asarray(updates["w"])))
  finally:
    optim.OPTIMIZER_BUILDERS.pop("lion", None)
    optim.SCHEDULE_BUILDERS.pop("exponential", None)


def test_a_new_source_is_selected_by_config(tmp_path):
  try:
    _exec_in(sources, _block("A data source"), sources.SOURCES, "csv_list")
    for split in ("train", "val"):
      rows = [f"{p},{p.parent.name}" for p in sorted((FLOWERS / split).glob("*/*.jpg"))]
      (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    c = config_lib.load("seed")
    c.dataset, c.data_dir, c.num_classes = "csv_list", str(tmp_path), 5
    c.image_size, c.resize_size, c.batch_size, c.eval_batch_size = 64, 72, 5, 5
    info = data.dataset_info(c)
    assert (info.num_train_examples, info.num_eval_examples, info.eval_split) == (15, 10, "val")
    batch = next(iter(data.create_train_iterator(c, start_step=0)))
    assert batch["image"].shape[0] == 5 and batch["image"].dtype == np.uint8
    assert set(np.asarray(batch["label"]).tolist()) <= set(range(5))
  finally:
    sources.SOURCES.pop("csv_list", None)


def test_the_doc_names_only_real_files():
  for path in re.findall(r"`(alexnet_jax/[\w/]+\.py)`", DOC):
    assert pathlib.Path(REPO_ROOT, path).is_file(), path
