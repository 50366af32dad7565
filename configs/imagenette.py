"""Imagenette: 10 ImageNet classes of real photos, with the paper's two-tower AlexNet.

fast.ai's Imagenette (9,469 train / 3,925 val JPEGs, class folders named by
WordNet id, shown as readable names by predict) is ImageNet in small: the same
photos, 10 classes instead of 1,000. What is the paper's: the two-tower
`paper` network (LRN, overlapping pooling, dropout 0.5), random crops of the
resized image + flips + PCA lighting, 10-crop testing. What is not, and why:
on this little data the paper's optimiser (SGD 0.01, N(0, 0.01) weights,
biases of 1) sat at chance (loss ln 10, gradient norm 0.2) for the first 100
steps in our CPU runs, with or without a warm-up, so this config uses the
seed project's optimiser, which learns here: Adam 2e-4 at batch 32,
Kaiming-normal (fan-out) initialisation. 30 epochs.

    python main.py --config=imagenette --workdir=runs/imagenette \\
        --config.data_dir=IMAGENETTE            # ROOT/train/<wnid>/*, ROOT/val/<wnid>/*

`:size=N` trains on N-pixel crops of images resized to N*8/7 (the paper's
224/256), e.g. `:size=64` on a CPU; `:epochs=E` changes the length; add
`--config.optimizer=sgd --config.learning_rate=0.01 --config.model.init=paper
--config.batch_size=128` for the paper's optimiser. Prepared data
(`python -m alexnet_jax.prepare --config=imagenette[:size=N]
--config.data_dir=IMAGENETTE --output=DIR`, then `--config.dataset=prepared
--config.data_dir=DIR`) is the fast path for repeated runs.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  opts = config_lib.parse_arg(arg)
  size = int(opts.pop("size", 224))
  epochs = float(opts.pop("epochs", 30))
  c = config_lib.base_config()  # the paper's network, augmentation and 10-crop testing
  c.dataset = "imagefolder"
  c.image_size = size
  c.resize_size = round(size * 256 / 224)
  c.num_epochs = epochs
  c.model.init = "seed"
  c.optimizer = "adam"
  c.learning_rate = 2e-4
  c.weight_decay = 0.0
  c.lr_schedule = "constant"
  c.batch_size = 32
  c.eval_batch_size = 256
  c.log_every_steps = 50
  c.eval_every_steps = -1  # once per epoch (295 steps)
  c.checkpoint_every_steps = 295
  return config_lib.apply_arg(c, ",".join(f"{k}={v}" if v is not True else k
                                          for k, v in opts.items()))
