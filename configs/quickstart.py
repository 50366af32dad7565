"""Quickstart: the `small` AlexNet on scikit-learn's handwritten digits, offline, on a CPU.

1,797 real 8×8 scans (1,437 train / 360 test) upscaled to 32×32. No download:
the dataset is built from the copy scikit-learn ships. About a minute on 2 CPU cores.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset = "sklearn_digits"
  c.image_size = 32
  c.resize_size = 32
  c.augmentation = "none"
  c.random_flip = False  # a flipped 2 is not a 2
  c.pca_lighting = 0.0
  c.eval_crops = 1
  c.mean_rgb = (0.5, 0.5, 0.5)
  c.std_rgb = (0.5, 0.5, 0.5)
  c.shuffle_buffer_size = 2048
  c.model.variant = "small"
  c.batch_size = 64
  c.eval_batch_size = 128
  c.num_epochs = 12.0
  c.learning_rate = 0.02
  c.lr_schedule = "cosine"
  c.warmup_epochs = 1.0
  c.weight_decay = 5e-4
  c.log_every_steps = 50
  c.eval_every_steps = 88  # every 4 epochs
  c.checkpoint_every_steps = 88
  return config_lib.apply_arg(c, arg)
