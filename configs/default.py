"""The paper's recipe: AlexNet (2012) on ImageNet with SGD-momentum and ÷10 on plateau.

Every other config imports this one and overrides a few fields, so every key a
script or sweep may override exists here (ml_collections locks the dict; a
misspelled `--config.key` is an error, not a silent no-op).

`get_config(arg)` takes comma-separated variants, e.g.
`--config=configs/default.py:variant=torchvision,tiny`:

  variant=NAME  model variant (paper, torchvision, seed, small).
  tiny          a CPU smoke run: fake data, small images, a few steps.
"""

import ml_collections
from ml_collections import config_dict

# ImageNet channel statistics on [0, 1] RGB (the values torchvision uses).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def parse_arg(arg):
  """Parses `a=1,b,c=x` into {'a': '1', 'b': True, 'c': 'x'}."""
  out = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition("=")
    out[key.strip()] = value.strip() if sep else True
  return out


def base_config():
  """All keys with the paper's values."""
  c = ml_collections.ConfigDict()

  # ---- data ----
  c.dataset = "imagenet2012"  # a TFDS name, "imagefolder", "fake", or "sklearn_digits"
  c.data_dir = config_dict.placeholder(str)  # imagefolder root: train/<class>/*, val/<class>/*
  c.tfds_data_dir = config_dict.placeholder(str)  # where TFDS keeps prepared datasets
  c.train_split = "train"
  c.eval_split = "validation"
  c.num_classes = config_dict.placeholder(int)  # None: read from the dataset's metadata
  c.image_size = 224
  c.resize_size = 256  # shorter side before cropping (train "paper" aug and eval)
  c.augmentation = "paper"  # paper | inception | none (resize + centre crop)
  c.random_flip = True
  c.pca_lighting = 0.1  # σ of the paper's PCA colour noise; 0 disables
  c.inception_area_range = (0.08, 1.0)
  c.eval_crops = 10  # 1 (centre) or 10 (paper: 4 corners + centre, and flips)
  c.mean_rgb = IMAGENET_MEAN_RGB  # on [0, 1] RGB; applied on the device
  c.std_rgb = IMAGENET_STD_RGB
  c.shuffle_buffer_size = 16_384
  c.cache_train = False
  c.skip_corrupt_images = False  # imagefolder: skip (and count) undecodable files
  c.prefetch_batches = 2  # device-side prefetch depth
  c.fake_num_examples = 1024  # size of the `fake` dataset's splits

  # ---- model ----
  c.model = ml_collections.ConfigDict()
  c.model.variant = "paper"
  # None means "the variant's default".
  c.model.activation = config_dict.placeholder(str)
  c.model.lrn = config_dict.placeholder(bool)
  c.model.overlapping_pool = config_dict.placeholder(bool)
  c.model.dropout_rate = config_dict.placeholder(float)
  c.model.width_multiplier = 1.0
  c.model.init = config_dict.placeholder(str)  # paper | seed | flax
  # auto | on | off: CPU-fast formulations with the same numerics (alexnet_jax/cpu_kernels.py:
  # a scatter-free max-pool gradient, and train/eval steps compiled with convolutions off
  # YNNPACK); auto = on when JAX's default backend is the CPU, so GPU/TPU programs stay plain.
  c.model.cpu_kernels = "auto"

  # ---- optimisation ----
  c.batch_size = 128  # global, over all devices of all processes
  c.eval_batch_size = 128
  c.num_epochs = 90.0
  c.num_train_steps = -1  # > 0 wins over num_epochs
  c.learning_rate = 0.01
  c.scale_lr_by_batch = False  # lr = learning_rate * batch_size / 256
  c.optimizer = "sgd"  # sgd | lars
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 5e-4
  c.decoupled_weight_decay = False  # False: the paper's (and torch.optim.SGD's) coupled form
  c.weight_decay_mask = "all"  # all | kernels
  c.lr_schedule = "plateau"  # constant | step | plateau | cosine
  c.lr_step_epochs = (30, 60)  # step: ×lr_decay_factor at each
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 0.0  # cosine (and step): linear warm-up
  c.plateau_patience = 1  # evals without improvement before ÷10
  c.plateau_max_decays = 3
  c.plateau_min_delta = 1e-3
  c.label_smoothing = 0.0
  c.half_precision = False  # bf16 compute, fp32 params and optimiser state
  c.seed = 0

  # ---- parallelism ----
  c.parallelism = ml_collections.ConfigDict()
  c.parallelism.model = 1  # 2: the paper's two-tower model parallelism

  # ---- loop ----
  c.log_every_steps = 100
  c.eval_every_steps = -1  # <= 0: once per epoch
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.profile = False
  # A workdir that holds a run with a different config is an error unless this
  # is set (only the keys in train.RESUMABLE_KEYS may change silently).
  c.allow_config_change = False
  return c


def apply_arg(c, arg):
  """Applies `get_config(arg)` variants shared by every config file."""
  opts = parse_arg(arg)
  if "variant" in opts:
    c.model.variant = opts.pop("variant")
  if opts.pop("tiny", False):
    c.dataset = "fake"
    c.num_classes = 10
    # 32×32 suits `small`; the ImageNet variants need >= 63 pixels to survive
    # conv1's stride 4 and three 3/2 poolings.
    small = c.model.variant in ("paper", "small")
    c.image_size = 32 if small else 64
    c.resize_size = 36 if small else 72
    c.batch_size = 8
    c.eval_batch_size = 8
    c.fake_num_examples = 64
    c.num_train_steps = 4
    c.eval_every_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.eval_crops = 1
    c.model.variant = "small" if c.model.variant == "paper" else c.model.variant
  if opts:
    raise ValueError(f"Unknown config arguments {sorted(opts)}; known: variant=NAME, tiny.")
  return c


def get_config(arg=None):
  return apply_arg(base_config(), arg)
