"""The seed's recipe, exactly: the PyTorch flowers project this codebase started from.

Half-width AlexNet (`seed`: 48/128/192/192/128 filters, 2048-2048 FC, dropout
0.5 before fc6 and fc7), Kaiming-normal (fan-out) conv weights, N(0, 0.01)
linear weights, zero biases; Adam lr 2e-4, no weight decay, batch 32, 30
epochs at a constant rate; RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3)
and horizontal flips; pixels normalised with mean 0.5, std 0.5; evaluation
resizes the whole image to 224x224 (no crop) after every epoch; the best
validation checkpoint is kept. `benchmarks/seed_recipe_torch.py` is the same
recipe in PyTorch, so the two code bases can be compared run for run.

Data: tf_flowers (downloaded on first use; its 10% eval split is carved from
train), or a folder of your own: `--config.dataset=imagefolder
--config.data_dir=ROOT` with ROOT/train/<class>/* and ROOT/val/<class>/*.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset = "tf_flowers"
  c.model.variant = "seed"
  c.optimizer = "adam"
  c.learning_rate = 2e-4
  c.weight_decay = 0.0
  c.lr_schedule = "constant"
  c.batch_size = 32
  c.eval_batch_size = 40
  c.num_epochs = 30.0
  c.augmentation = "inception"
  c.inception_area_range = (0.08, 1.0)
  c.pca_lighting = 0.0
  c.mean_rgb = (0.5, 0.5, 0.5)
  c.std_rgb = (0.5, 0.5, 0.5)
  c.image_size = 224
  c.resize_size = 224
  c.eval_resize = "stretch"
  c.eval_crops = 1
  c.log_every_steps = 5
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 1
  return config_lib.apply_arg(c, arg)
