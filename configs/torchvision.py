"""torchvision's ImageNet recipe for its AlexNet variant.

SGD momentum 0.9, lr 0.01, weight decay 1e-4, ×0.1 every 30 epochs, 90 epochs,
batch 256 (torchvision's reference: 8 GPUs × 32), random-resized crops + flips,
centre-crop evaluation, PyTorch's default init. Its published accuracy: 56.52%
top-1, 79.07% top-5.
"""

from alexnet_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.model.variant = "torchvision"
  c.augmentation = "inception"
  c.pca_lighting = 0.0
  c.eval_crops = 1
  c.batch_size = 256
  c.eval_batch_size = 256
  c.learning_rate = 0.01
  c.weight_decay = 1e-4
  c.lr_schedule = "step"
  c.lr_step_epochs = (30, 60)
  c.num_epochs = 90.0
  return config_lib.apply_arg(c, arg)
