"""Small photo datasets (flowers): the `seed` AlexNet with a recipe that learns from a few hundred photos.

Defaults to TFDS tf_flowers (downloaded on first use; it has no validation
split, so the last 10% of train is held out). For your own photos:

    python main.py --config=configs/flowers.py --workdir=runs/mine \\
        --config.dataset=imagefolder --config.data_dir=ROOT

with ROOT/train/<class>/* and ROOT/val/<class>/* (any image format).

What it changes from `configs/seed.py` (the original PyTorch project's recipe,
unchanged) and why. Each is a standard remedy for training from scratch on few
images, not a value tuned to one dataset:

* AdamW with decoupled weight decay 0.05 instead of Adam without decay: a
  15M-parameter network memorises a few hundred photos; decay slows that.
* Label smoothing 0.1: the same, on the output side.
* A 2-epoch linear warm-up, then cosine decay to zero, at a peak of 4e-4:
  a constant rate ends training while the weights still bounce between
  minibatches; the decay lets the last epochs settle.

`configs/sweeps/small_data_recipe.py` is the sweep these came from (the seed
recipe and each change, 3 seeds each); `benchmarks/seed_vs_torch.py` trains
this config and the same recipe in PyTorch, seed by seed, in one run.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.load("seed")
  c.optimizer = "adamw"
  c.weight_decay = 0.05
  c.label_smoothing = 0.1
  c.lr_schedule = "cosine"
  c.warmup_epochs = 2.0
  c.learning_rate = 4e-4
  return config_lib.apply_arg(c, arg)
