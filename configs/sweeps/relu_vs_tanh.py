"""The paper's Figure 1: how much faster does a ReLU net reach 25% training error than tanh?

Krizhevsky et al. (2012, §3.1): "a four-layer convolutional neural network with
ReLUs reaches a 25% training error rate on CIFAR-10 six times faster than an
equivalent network with tanh neurons", with no regularisation of any kind and
each network's learning rate chosen to make it train as fast as possible.

Here: the `small` variant (two 5x5 conv layers, two hidden FC layers; LRN off,
dropout 0, weight decay 0, no augmentation), SGD-momentum 0.9 at a constant
learning rate with no warm-up, and the training accuracy logged often enough to
see the crossing. Two points, `model.activation=relu` and `=tanh`; the report's
"step train top-1 ≥ 0.75" column is the number the paper's claim is about.

`get_config(arg)` / `get_sweep(arg)` options (comma-separated):

  small      The offline scikit-learn digits (1,437 training images, 10 classes)
             instead of CIFAR-10 (tfds `cifar10`, which must be prepared in
             config.tfds_data_dir). Digits are far easier than CIFAR-10, so the
             default learning rate there is small enough for both curves to take
             a few hundred steps; see README "Sweeps and ablations".
  lr=X       The learning rate of both points (defaults: 0.01 CIFAR-10, see
             SMALL_LR for digits). The paper tuned it per network; sweep lr by
             running this file once per value into separate workdirs.
  steps=N    Training steps per point.

    python -m alexnet_jax.sweep --sweep=configs/sweeps/relu_vs_tanh.py:small \
        --workdir=runs/relu_vs_tanh
"""

from alexnet_jax import config_lib
from alexnet_jax import sweep

CIFAR10_MEAN_RGB = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_RGB = (0.2470, 0.2435, 0.2616)
SMALL_LR = 0.001
SMALL_STEPS = 200


def _options(arg):
  opts = config_lib.parse_arg(arg)
  small = bool(opts.pop("small", False))
  lr = opts.pop("lr", None)
  steps = opts.pop("steps", None)
  if opts:
    raise ValueError(f"Unknown options {sorted(opts)} for relu_vs_tanh; known: small, lr=X, "
                     "steps=N.")
  return small, (None if lr is None else float(lr)), (None if steps is None else int(steps))


def get_config(arg=None):
  small, lr, steps = _options(arg)
  if small:
    c = config_lib.load("quickstart")
    c.learning_rate = SMALL_LR
    c.num_train_steps = SMALL_STEPS
    c.log_every_steps = 2
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 100
  else:
    c = config_lib.load("default")
    c.dataset = "cifar10"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 32
    c.resize_size = 32
    c.mean_rgb = CIFAR10_MEAN_RGB
    c.std_rgb = CIFAR10_STD_RGB
    c.random_flip = False
    c.eval_crops = 1
    c.shuffle_buffer_size = 50_000
    c.cache_train = True
    c.batch_size = 128
    c.learning_rate = 0.01
    c.num_train_steps = 20_000  # ~51 epochs; tanh needs the long tail
    c.log_every_steps = 20
    c.eval_every_steps = 1_000
    c.checkpoint_every_steps = 1_000
  # Figure 1's conditions: no regularisation, the plain optimiser, nothing but
  # the activation differs.
  c.model.variant = "small"
  c.model.lrn = False
  c.model.dropout_rate = 0.0
  c.weight_decay = 0.0
  c.augmentation = "none"
  c.pca_lighting = 0.0
  c.lr_schedule = "constant"
  c.warmup_epochs = 0.0
  c.momentum = 0.9
  if lr is not None:
    c.learning_rate = lr
  if steps is not None:
    c.num_train_steps = steps
  return c


def get_sweep(arg=None):
  _options(arg)
  return [{"model.activation": "relu"}, {"model.activation": "tanh"}]
