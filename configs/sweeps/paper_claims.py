"""The AlexNet paper's claims, each put to a verdict over seeds.

Every claim compares one arm against the full recipe (the baseline), seed by
seed; `python -m alexnet_jax.sweep report` turns the pairs into an effect with
a 95% t-interval and a verdict (the interval decides, not the point estimate):

  reproduced    the interval lies wholly on the side the paper claims
  contradicted  it lies wholly on the other side
  inconclusive  it contains zero

Scales (`:scale=NAME`, default `small`):

  small  Imagenette (10 ImageNet classes, 9,469 train / 3,925 val photos),
         prepared once at 40x40, the `small` variant on random 32x32 crops:
         about 4 CPU-minutes per point (6 epochs), the whole sweep (9 arms x 3
         seeds) about 2 hours on 2 cores. Close to the paper's own CIFAR-10 setting
         for Fig. 1 and §3.3.
  paper  ImageNet, the `paper` variant and the paper's recipe
         (configs/default.py): for accelerators.

Other options: `seeds=N` (default 3), `epochs=E`.

    python -m alexnet_jax.prepare --config=quickstart --config.dataset=imagefolder \\
        --config.data_dir=IMAGENETTE --config.resize_size=40 --output=DATA40
    python -m alexnet_jax.sweep --sweep=sweeps/paper_claims --workdir=runs/claims \\
        --config.data_dir=DATA40
    python -m alexnet_jax.sweep report --workdir=runs/claims
"""

from alexnet_jax import config_lib
from alexnet_jax import sweep

# One claim per row: the paper's words, the arm that drops the paper's choice,
# and how the report measures it (sweep_report.CLAIM_METRICS). `expect` is the
# sign the effect has when the paper is right, the effect being
# metric(arm) - metric(baseline), or metric(baseline) alone for `arm=None`.
CLAIMS = (
    sweep.Claim(
        "ReLU trains faster than tanh", "§3.1, Fig. 1",
        "networks with ReLUs train several times faster than their equivalents with tanh units",
        {"model.activation": "tanh"}, "epochs_to_train_top1", expect=+1, threshold=0.4),
    sweep.Claim(
        "Local response normalisation helps", "§3.3",
        "response normalization reduces our top-1 and top-5 error rates by 1.4% and 1.2%",
        {"model.lrn": False}, "final_eval_top1", expect=-1),
    sweep.Claim(
        "Overlapping pooling helps", "§3.4",
        "this scheme reduces the top-1 and top-5 error rates by 0.4% and 0.3%",
        {"model.overlapping_pool": False}, "final_eval_top1", expect=-1),
    sweep.Claim(
        "Dropout prevents overfitting", "§4.2",
        "without dropout, our network exhibits substantial overfitting",
        {"model.dropout_rate": 0.0}, "overfit_gap", expect=+1),
    sweep.Claim(
        "PCA lighting helps", "§4.1",
        "this scheme reduces the top-1 error rate by over 1%",
        {"pca_lighting": 0.0}, "final_eval_top1", expect=-1),
    sweep.Claim(
        "Random crops and flips prevent overfitting", "§4.1",
        "without this scheme, our network suffers from substantial overfitting",
        {"augmentation": "none", "random_flip": False}, "overfit_gap", expect=+1),
    sweep.Claim(
        "10-crop testing beats the centre crop", "§4.1",
        "averaging the predictions made by the network's softmax layer on the ten patches",
        None, "ten_crop_gain", expect=+1),
    # Two modern changes to the 2012 recipe, judged the same way.
    sweep.Claim(
        "An EMA of the weights evaluates better (not in the paper)", "Polyak & Juditsky 1992",
        "averaging the iterates gives a better estimate than the last iterate",
        {"ema_decay": 0.99}, "ema_gain", expect=+1),
    sweep.Claim(
        "Mixup + CutMix improve accuracy (not in the paper)", "Zhang et al. 2018; Yun et al. 2019",
        "mixup improves the generalization of state-of-the-art neural network architectures",
        {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, "final_eval_top1", expect=+1),
)


def _options(arg):
  opts = config_lib.parse_arg(arg)
  scale = opts.pop("scale", "small")
  if scale not in ("small", "paper"):
    raise ValueError(f"scale={scale!r} is not known; use small or paper.")
  seeds = int(opts.pop("seeds", 3))
  epochs = opts.pop("epochs", None)
  if opts:
    raise ValueError(f"Unknown options {sorted(opts)} for paper_claims; known: "
                     "scale=small|paper, seeds=N, epochs=E.")
  return scale, seeds, (None if epochs is None else float(epochs))


def get_config(arg=None):
  scale, _, epochs = _options(arg)
  if scale == "paper":
    c = config_lib.load("default")  # ImageNet, `paper` variant, 90 epochs, ÷10 on plateau
  else:
    c = config_lib.base_config()
    c.dataset = "prepared"  # Imagenette prepared at 40x40: pass --config.data_dir
    c.model.variant = "small"
    c.model.dropout_rate = 0.5  # the paper's (the `small` variant's default is 0)
    c.image_size = 32
    c.resize_size = 40
    c.batch_size = 128
    c.eval_batch_size = 256
    c.num_epochs = 6.0
    c.learning_rate = 0.02
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.5
    c.log_every_steps = 10  # fine enough for the epochs-to-threshold yardstick
    c.eval_every_steps = 10_000  # only the final eval: 10 crops of 3,925 cost ~1/3 epoch
    c.checkpoint_every_steps = 219  # every 3 epochs of 73 steps
  if epochs is not None:
    c.num_epochs = epochs
  return c


def get_sweep(arg=None):
  _, seeds, _ = _options(arg)
  arms = [{}] + [dict(claim.arm) for claim in CLAIMS if claim.arm]
  # Seeds slowest: after each third of the sweep every arm has one more seed.
  return sweep.product(sweep.axis("seed", list(range(seeds))), arms)
