"""Throughput of the train step alone: fake data made once and kept on the devices.

No input pipeline, no dataset, no host work per step; bf16 on GPU/TPU (auto).
The final eval scores 512 fake images, seconds even on a CPU.
`--config=configs/fake_data_benchmark.py:variant=torchvision` for another net.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset = "fake"
  c.num_classes = 1000
  c.fake_num_examples = 512
  c.augmentation = "none"
  c.pca_lighting = 0.0
  c.eval_crops = 1
  c.batch_size = 256
  c.eval_batch_size = 256
  c.num_train_steps = 200
  c.eval_every_steps = 1 << 30
  c.log_every_steps = 20
  c.checkpoint_every_steps = 1 << 30
  c.lr_schedule = "constant"
  return config_lib.apply_arg(c, arg)
