"""Throughput on synthetic data: no input-pipeline cost, no dataset needed.

`--config=configs/fake_data_benchmark.py:variant=torchvision` for another net.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset = "fake"
  c.num_classes = 1000
  c.fake_num_examples = 1 << 16
  c.augmentation = "none"
  c.pca_lighting = 0.0
  c.eval_crops = 1
  c.batch_size = 256
  c.eval_batch_size = 256
  c.half_precision = True
  c.num_train_steps = 200
  c.eval_every_steps = 1 << 30
  c.log_every_steps = 20
  c.checkpoint_every_steps = 1 << 30
  c.lr_schedule = "constant"
  return config_lib.apply_arg(c, arg)
