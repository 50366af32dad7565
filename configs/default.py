"""The paper's recipe: AlexNet (2012) on ImageNet, SGD-momentum, lr ÷10 on plateau.

Every key and its default is defined once, in `alexnet_jax/config_lib.py`
(`python main.py --help` lists them); this file is that base config. Other
configs start from it and override a few fields.

`get_config(arg)` takes comma-separated variants, e.g. `--config=default:variant=seed,tiny`:

  variant=NAME  model variant (paper, torchvision, seed, small).
  tiny          a CPU smoke run: fake data, small images, a few steps.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  return config_lib.apply_arg(config_lib.base_config(), arg)
