"""Imagenette: 10 ImageNet classes of real photos, with the paper's `paper` AlexNet and recipe.

fast.ai's Imagenette (9,469 train / 3,925 val JPEGs, class folders named by
WordNet id) is ImageNet in small: the same photos and the same preprocessing,
10 classes instead of 1,000. This is the paper's recipe unchanged where the
data allows: the two-tower `paper` network with LRN and N(0, 0.01) init,
SGD-momentum 0.9, coupled weight decay 5e-4, batch 128, lr 0.01 divided by 10
when validation top-1 stalls, random crops + flips + PCA lighting, 10-crop
testing. What the data forces: 30 epochs instead of 90 (10x fewer images per
epoch), and a 1-epoch linear warm-up (the paper's N(0, 0.01) init otherwise
sits at chance for the first epochs on this little data).

    python main.py --config=imagenette --workdir=runs/imagenette \\
        --config.data_dir=IMAGENETTE            # ROOT/train/<wnid>/*, ROOT/val/<wnid>/*

`:size=N` trains at N-pixel crops of images resized to N*8/7 (the paper's
224/256), e.g. `:size=128` for a CPU; `:epochs=E` changes the length.
Prepared data (`python -m alexnet_jax.prepare --config=imagenette
--config.data_dir=IMAGENETTE --output=DIR`, then `--config.dataset=prepared
--config.data_dir=DIR`) is the fast path for repeated runs.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  opts = config_lib.parse_arg(arg)
  size = int(opts.pop("size", 224))
  epochs = float(opts.pop("epochs", 30))
  c = config_lib.base_config()  # the paper's recipe: `paper` variant, SGD, plateau, 10 crops
  c.dataset = "imagefolder"
  c.image_size = size
  c.resize_size = round(size * 256 / 224)
  c.num_epochs = epochs
  c.warmup_epochs = 1.0
  c.plateau_patience = 2
  c.eval_batch_size = 256
  c.log_every_steps = 20
  c.eval_every_steps = -1  # once per epoch (74 steps)
  c.checkpoint_every_steps = 74
  return config_lib.apply_arg(c, ",".join(f"{k}={v}" if v is not True else k
                                          for k, v in opts.items()))
