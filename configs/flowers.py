"""Small photo datasets (flowers): the `seed` AlexNet with a recipe that learns from a few hundred photos.

Defaults to TFDS tf_flowers (downloaded on first use; it has no validation
split, so the last 10% of train is held out). For your own photos:

    python main.py --config=configs/flowers.py --workdir=runs/mine \\
        --config.dataset=imagefolder --config.data_dir=ROOT

with ROOT/train/<class>/* and ROOT/val/<class>/* (any image format).
`configs/seed.py` is the original PyTorch project's recipe, unchanged.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.load("seed")
  return config_lib.apply_arg(c, arg)
