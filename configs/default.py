"""The paper's recipe: AlexNet (2012) on ImageNet, SGD-momentum, lr ÷10 on plateau.

Every key and its default is defined once, in `alexnet_jax/config_lib.py`
(`python main.py --help` lists them); this file is that base config. Other
configs start from it and override a few fields.

`get_config(arg)` takes comma-separated variants, e.g. `--config=default:variant=seed,tiny`:

  variant=NAME  model variant (paper, torchvision, seed, small).
  tiny          a CPU smoke run: fake data, small images, a few steps.
"""

from alexnet_jax import config_lib


def tiny(c):
  """A CPU smoke run on fake data, small images, a few steps."""
  c.dataset = "fake"
  c.num_classes = 10
  # 32x32 suits `small`; the ImageNet variants need >= 63 pixels to survive
  # conv1's stride 4 and three 3/2 poolings.
  small = c.model.variant in ("paper", "small")
  c.image_size = 32 if small else 64
  c.resize_size = 36 if small else 72
  c.batch_size = c.eval_batch_size = 8
  c.fake_num_examples = 64
  c.num_train_steps = 4
  c.eval_every_steps = 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.eval_crops = 1
  c.model.variant = "small" if c.model.variant == "paper" else c.model.variant


def get_config(arg=None):
  return config_lib.apply_arg(config_lib.base_config(), arg, tiny=tiny)
