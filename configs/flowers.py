"""The seed project's setup: the half-width `seed` AlexNet on the TF flowers photos.

`tf_flowers` has only a train split, so 10% of it is carved off for validation
with TFDS slicing. To train on your own folder of images instead:
`--config.dataset=imagefolder --config.data_dir=ROOT` (ROOT/train/<class>/*,
ROOT/val/<class>/*), e.g. ../shared/data/flowers-mini.
Optimiser: SGD momentum 0.9, lr 0.01 with cosine decay,
inception crops + flips, centre-crop eval.
"""

from configs import default


def get_config(arg=None):
  c = default.base_config()
  c.dataset = "tf_flowers"
  c.train_split = "train[:90%]"
  c.eval_split = "train[90%:]"
  c.model.variant = "seed"
  c.augmentation = "inception"
  c.pca_lighting = 0.0
  c.eval_crops = 1
  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_epochs = 30.0
  c.learning_rate = 0.01
  c.weight_decay = 5e-4
  c.lr_schedule = "cosine"
  c.warmup_epochs = 1.0
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  return default.apply_arg(c, arg)
