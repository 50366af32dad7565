"""The AlexNet paper's ablations, one claim per axis, around the full model.

Axes (the first value is the baseline's, i.e. the paper's choice):

  activation  model.activation       relu, tanh     (§3.1: ReLU trains ~6x faster)
  lrn         model.lrn              True, False    (§3.3: LRN -1.4% top-1 error)
  pooling     model.overlapping_pool True, False    (§3.4: 3/2 vs 2/2, -0.4% top-1)
  dropout     model.dropout_rate     0.5, 0.0       (§4.2: dropout vs overfitting)
  pca         pca_lighting           0.1, 0.0       (§4.1: PCA lighting, -1% top-1)
  width       model.variant          paper, seed    (ImageNet: the paper's net vs the
              model.width_multiplier 1.0, 0.5        half-width seed net; `small`: width x0.5)

The paper reports each claim by changing one thing against the full model, so
the default grid is *one axis at a time*: the baseline plus one point per
non-baseline value (7 runs, not the product's 64).

`get_config(arg)` / `get_sweep(arg)` take comma-separated options:

  small          The offline quickstart data (scikit-learn digits, 32x32) and
                 the `small` variant: minutes per point on a 2-core CPU. Without
                 it: ImageNet with the `paper` variant and the paper's recipe
                 (configs/default.py), for GPUs/TPUs.
  axis=A[+B...]  Only these axes (names above), e.g. `:small,axis=activation`.
  grid=product   The full product of the chosen axes instead of one at a time.
  epochs=N       Train N epochs per point (default: 90 ImageNet, 8 `small`).

    python -m alexnet_jax.sweep --sweep=configs/sweeps/paper_ablations.py:small \
        --workdir=runs/ablations_small
    python -m alexnet_jax.sweep --sweep=configs/sweeps/paper_ablations.py:axis=lrn \
        --workdir=gs://.../ablations --print_commands      # for a cluster scheduler

At `small` the baseline is the paper's recipe in miniature: LRN, overlapping
pooling, dropout 0.5 on the two hidden FC layers, PCA lighting (the paper's
augmentation with the crop spanning the whole 32x32 digit and no flips: a
flipped 2 is not a 2), SGD-momentum with weight decay 5e-4.
"""

from alexnet_jax import config_lib
from alexnet_jax import sweep

AXES = {
    "activation": {"model.activation": ["relu", "tanh"]},
    "lrn": {"model.lrn": [True, False]},
    "pooling": {"model.overlapping_pool": [True, False]},
    "dropout": {"model.dropout_rate": [0.5, 0.0]},
    "pca": {"pca_lighting": [0.1, 0.0]},
    # Set per size in _axes(): `seed` is an ImageNet-sized net.
    "width": None,
}
GRIDS = ("one_at_a_time", "product")


def _options(arg):
  opts = config_lib.parse_arg(arg)
  small = bool(opts.pop("small", False))
  names = opts.pop("axis", None)
  names = list(AXES) if names in (None, True) else names.split("+")
  unknown = [n for n in names if n not in AXES]
  if unknown:
    raise ValueError(f"Unknown ablation axis {unknown[0]!r}; known: {', '.join(AXES)}.")
  grid = opts.pop("grid", "one_at_a_time")
  if grid not in GRIDS:
    raise ValueError(f"grid={grid!r} is not known; use one of {GRIDS}.")
  epochs = opts.pop("epochs", None)
  if opts:
    raise ValueError(f"Unknown options {sorted(opts)} for paper_ablations; known: small, "
                     "axis=NAME[+NAME], grid=one_at_a_time|product, epochs=N.")
  return small, names, grid, (None if epochs is None else float(epochs))


def get_config(arg=None):
  small, _, _, epochs = _options(arg)
  if not small:
    c = config_lib.load("default")  # the paper: ImageNet, `paper` variant, 90 epochs, ÷10 on plateau
  else:
    c = config_lib.load("quickstart")
    c.augmentation = "paper"  # so that PCA lighting applies; the crop is the whole image
    c.resize_size = c.image_size
    c.random_flip = False
    c.pca_lighting = 0.1
    c.model.dropout_rate = 0.5  # the paper's; the `small` variant's default is 0
    c.model.lrn = True
    c.num_epochs = 8.0
    c.warmup_epochs = 0.5
    c.log_every_steps = 11  # 1,437 examples / 64 = 22 steps per epoch
    c.eval_every_steps = 22
    c.checkpoint_every_steps = 44
  if epochs is not None:
    c.num_epochs = epochs
  return c


def _axes(small):
  axes = dict(AXES)
  axes["width"] = ({"model.width_multiplier": [1.0, 0.5]} if small
                   else {"model.variant": ["paper", "seed"]})
  return axes


def get_sweep(arg=None):
  small, names, grid, _ = _options(arg)
  axes = _axes(small)
  chosen = [sweep.axis(key, values) for name in names for key, values in axes[name].items()]
  return sweep.product(*chosen) if grid == "product" else sweep.one_at_a_time(*chosen)
