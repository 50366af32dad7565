"""How configs/flowers.py was chosen: the seed's recipe and a few changes to it, 3 seeds each.

Each recipe is a small change a practitioner would try on a few hundred photos
(no tuning to one dataset): a warm-up and cosine decay, AdamW's decoupled
weight decay, label smoothing, a milder random-resized crop. Run it on a
folder of photos (the points train configs/seed.py plus the overrides):

    python -m alexnet_jax.sweep --sweep=sweeps/small_data_recipe --workdir=runs/recipe \\
        --config.dataset=imagefolder --config.data_dir=../shared/data/flowers-mini
    python -m alexnet_jax.sweep report --workdir=runs/recipe

`:recipes=a+b` keeps some recipes; `:seeds=0+1` some seeds.
"""

from alexnet_jax import config_lib
from alexnet_jax import sweep

RECIPES = {
    "seed": {},
    "smooth": {"label_smoothing": 0.1},
    "cosine": {"lr_schedule": "cosine", "warmup_epochs": 2.0, "learning_rate": 4e-4,
               "label_smoothing": 0.1},
    "adamw": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine",
              "warmup_epochs": 2.0, "learning_rate": 4e-4, "label_smoothing": 0.1},
    "milder_crop": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine",
                    "warmup_epochs": 2.0, "learning_rate": 4e-4, "label_smoothing": 0.1,
                    "inception_area_range": (0.25, 1.0)},
    # Shorter runs: twice the updates per epoch (batch 16) instead of more epochs.
    "bs16": {"batch_size": 16},
    "adamw_20ep": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine",
                   "warmup_epochs": 2.0, "learning_rate": 4e-4, "label_smoothing": 0.1,
                   "num_epochs": 20.0},
    "adamw_20ep_bs16": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine",
                        "warmup_epochs": 2.0, "learning_rate": 3e-4, "label_smoothing": 0.1,
                        "num_epochs": 20.0, "batch_size": 16},
}


def _options(arg):
  opts = config_lib.parse_arg(arg)
  recipes = opts.pop("recipes", "+".join(RECIPES)).split("+")
  seeds = [int(s) for s in str(opts.pop("seeds", "0+1+2")).split("+")]
  if opts or any(r not in RECIPES for r in recipes):
    raise ValueError(f"small_data_recipe takes recipes=NAME[+NAME] ({', '.join(RECIPES)}) "
                     "and seeds=N[+N].")
  return recipes, seeds


def get_config(arg=None):
  del arg
  return config_lib.load("seed")


def get_sweep(arg=None):
  recipes, seeds = _options(arg)
  return sweep.product([RECIPES[r] for r in recipes], sweep.axis("seed", seeds))
