"""Every config key, once: its default (the paper's recipe), what it means, what it allows.

`FIELDS` is the single definition: `base_config()` builds the ConfigDict from it,
`validate()` checks a config against it before anything is compiled, and
`help_text()` lists it for `main.py --help`. Allowed values owned by another module
are referenced, not repeated. Config files (`configs/*.py`) start from
`base_config()`; `load(name_or_path)` finds a shipped config by name from anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import inspect
import os
import pathlib
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

# ImageNet channel statistics on [0, 1] RGB (torchvision's values).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Field:
  """One config key. `choices`/`check` may be callables so other modules own the values."""
  default: Any
  help: str
  type: type | None = None  # Needed when the default is None.
  choices: tuple | Callable[[], tuple] | None = None
  # value -> None when fine, else what is required ("must be > 0").
  check: Callable[[Any], str | None] | None = None

  def allowed(self) -> tuple | None:
    # Registries are dicts read when asked, so entries added after import count.
    if self.choices is None:
      return None
    return tuple(self.choices() if callable(self.choices) else self.choices)


def _positive(v):
  return None if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else (
      "it must be > 0")


def _non_negative(v):
  return None if isinstance(v, (int, float)) and v >= 0 else "it must be >= 0"


def _at_least_one(v):
  return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else (
      "it must be an integer >= 1")


def _fraction(v):
  return None if isinstance(v, (int, float)) and 0 <= v < 1 else "it must be in [0, 1)"


def _open_fraction(v):
  return None if isinstance(v, (int, float)) and 0 < v < 1 else "it must be in (0, 1)"


def _rgb(v):
  ok = len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
  return None if ok else "it must be three numbers (R, G, B) on the [0, 1] scale"


def _area_range(v):
  ok = len(v) == 2 and 0.0 < v[0] <= v[1] <= 1.0
  return None if ok else "it must be (min, max) with 0 < min <= max <= 1"


def _betas(v):
  ok = len(v) == 2 and all(0 <= b < 1 for b in v)
  return None if ok else "it must be (b1, b2), each in [0, 1)"


def _model_check(key):
  """The model's own rule for `model.KEY` (alexnet_jax.models.check_override)."""

  def check(value):
    from alexnet_jax import models  # pylint: disable=g-import-not-at-top
    try:
      models.check_override(key, value)
    except ValueError as e:
      return str(e).split(" is not allowed: ", 1)[-1].rstrip(".")
    return None

  return check


# Metric writers config.writers may name (metrics.WRITERS builds them).
WRITERS = ("tensorboard", "wandb", "mlflow")


def _writers_check(value):
  unknown = [w for w in str(value).split(",") if w.strip() and w.strip() not in WRITERS]
  return f"unknown writer(s) {unknown}; choose from {', '.join(WRITERS)}" if unknown else None


def _models(name):
  def get():
    from alexnet_jax import models  # pylint: disable=g-import-not-at-top
    return getattr(models, name)
  return get


def _optim(name):
  def get():
    from alexnet_jax import optim  # pylint: disable=g-import-not-at-top
    return getattr(optim, name)
  return get


def _eval_crops():
  from alexnet_jax import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.CROPS


def _augment(name):
  def get():
    from alexnet_jax.data import augmentations  # pylint: disable=g-import-not-at-top
    return getattr(augmentations, name)
  return get


FIELDS: dict[str, Field] = {
    # ---- data ----
    "dataset": Field("imagenet2012", "a TFDS name (imagenet2012, tf_flowers, cifar10, ...), "
                     "sklearn_digits (offline), imagefolder or prepared (with data_dir), or fake"),
    "data_dir": Field(None, "imagefolder: ROOT with ROOT/train/<class>/* and ROOT/val/<class>/*; "
                      "prepared: the output of `python -m alexnet_jax.prepare`", type=str),
    "tfds_data_dir": Field(None, "where TFDS keeps prepared datasets (default ~/tensorflow_datasets)",
                           type=str),
    "train_split": Field("train", "training split, optionally sliced: train, train[:90%]"),
    "eval_split": Field(None, "eval split; unset: the data's validation (or val, test) split, "
                        "else the last eval_holdout of train_split", type=str),
    "eval_holdout": Field(0.1, "fraction of the training split held out for eval when the data "
                          "has no validation split", check=_open_fraction),
    "num_classes": Field(None, "classifier size; unset: the dataset's", type=int,
                         check=_at_least_one),
    "image_size": Field(224, "crop side fed to the network", check=_at_least_one),
    "resize_size": Field(256, "side images are resized to before cropping (shorter side, or "
                         "both with eval_resize=stretch)", check=_at_least_one),
    "augmentation": Field("paper", "paper: random crop of the resized image + flip + PCA "
                          "lighting; inception: random-resized crop + flip; none: centre crop",
                          choices=_augment("AUGMENTATIONS")),
    "random_flip": Field(True, "random horizontal flips in training"),
    "pca_lighting": Field(0.1, "sigma of the paper's PCA colour noise (0 disables)",
                          check=_non_negative),
    "inception_area_range": Field((0.08, 1.0), "area fraction of inception crops",
                                  check=_area_range),
    "eval_crops": Field(10, "1: centre crop; 10: the paper's 4 corners + centre and mirrors",
                        choices=_eval_crops),
    "eval_resize": Field("shorter_side", "eval resize: shorter_side (torchvision Resize(r)) or "
                         "stretch (Resize((r, r)), aspect not kept)",
                         choices=_augment("EVAL_RESIZES")),
    "mean_rgb": Field(IMAGENET_MEAN_RGB, "per-channel mean on [0, 1], subtracted on the device",
                      check=_rgb),
    "std_rgb": Field(IMAGENET_STD_RGB, "per-channel std on [0, 1], divided on the device",
                     check=_rgb),
    "shuffle_buffer_size": Field(16_384, "TFDS sources: shuffle buffer (examples)",
                                 check=_at_least_one),
    "cache_train": Field("auto", "keep the training split's decoded images in memory: True, "
                         "False, or auto (when they fit in 1 GiB)", type=object,
                         choices=("auto", True, False)),
    "skip_corrupt_images": Field(False, "imagefolder: skip (and name and count) undecodable "
                                 "files instead of stopping"),
    "prefetch_batches": Field(2, "batches copied to the devices ahead of the step",
                              check=_at_least_one),
    "input_workers": Field(0, "prepared data: read threads; 0: min(8, cores)", check=_non_negative),
    "fake_num_examples": Field(1024, "fake: examples per split", check=_at_least_one),
    # ---- model ----
    "model.variant": Field("paper", "the network (models.ARCHITECTURES)",
                           choices=_models("ARCHITECTURES")),
    "model.activation": Field(None, "unset: the variant's (relu)", type=str,
                              choices=_models("ACTIVATIONS")),
    "model.lrn": Field(None, "local response norm after conv1/conv2; unset: the variant's",
                       type=bool),
    "model.overlapping_pool": Field(None, "3/2 (True) or 2/2 max pooling; unset: 3/2", type=bool),
    "model.dropout_rate": Field(None, "dropout on the hidden FC layers; unset: the variant's",
                                type=float, check=_model_check("dropout_rate")),
    "model.width_multiplier": Field(1.0, "scales every conv and FC width",
                                    check=_model_check("width_multiplier")),
    "model.init": Field(None, "weight initialisation; unset: the variant's", type=str,
                        choices=_models("INITS")),
    "model.cpu_kernels": Field("auto", "auto, on or off: CPU-fast formulations (auto: on when "
                               "JAX's default backend is the CPU)",
                               check=_model_check("cpu_kernels")),
    # ---- optimisation ----
    "batch_size": Field(128, "global batch, over all devices of all processes",
                        check=_at_least_one),
    "eval_batch_size": Field(128, "global eval batch", check=_at_least_one),
    "num_epochs": Field(90.0, "training length in epochs (unless num_train_steps > 0)"),
    "num_train_steps": Field(-1, "training length in steps; > 0 wins over num_epochs"),
    "learning_rate": Field(0.01, "peak learning rate", check=_positive),
    "scale_lr_by_batch": Field(False, "lr = learning_rate * batch_size / 256"),
    "optimizer": Field("sgd", "update rule (sgd: momentum SGD, the paper's)",
                       choices=_optim("OPTIMIZER_BUILDERS")),
    "momentum": Field(0.9, "sgd/lars momentum (0 disables)", check=_fraction),
    "nesterov": Field(False, "sgd/lars: Nesterov momentum"),
    "adam_betas": Field((0.9, 0.999), "adam/adamw (b1, b2)", check=_betas),
    "adam_eps": Field(1e-8, "adam/adamw epsilon", check=_positive),
    "weight_decay": Field(5e-4, "weight decay", check=_non_negative),
    "decoupled_weight_decay": Field(False, "False: added to the gradient (the paper, "
                                    "torch.optim.SGD/Adam); True: decoupled (always for adamw)"),
    "weight_decay_mask": Field("all", "which parameters decay (all: the paper)",
                               choices=_optim("WEIGHT_DECAY_MASKS")),
    "lr_schedule": Field("plateau", "learning-rate schedule (plateau: ÷10 when eval top-1 "
                         "stalls, the paper's)", choices=_optim("SCHEDULE_BUILDERS")),
    "lr_step_epochs": Field((30, 60), "step: epochs at which lr is multiplied by lr_decay_factor"),
    "lr_decay_factor": Field(0.1, "step and plateau decay factor", check=_open_fraction),
    "warmup_epochs": Field(0.0, "linear warm-up (epochs)", check=_non_negative),
    "plateau_patience": Field(1, "plateau: evals without improvement before a decay",
                              check=_at_least_one),
    "plateau_max_decays": Field(3, "plateau: most decays", check=_non_negative),
    "plateau_min_delta": Field(1e-3, "plateau: improvement that counts", check=_non_negative),
    "label_smoothing": Field(0.0, "label smoothing", check=_fraction),
    "mixup_alpha": Field(0.0, "Mixup on the device: lam ~ Beta(alpha, alpha) (0: off)",
                         check=_non_negative),
    "cutmix_alpha": Field(0.0, "CutMix on the device (0: off; with mixup_alpha too, half of "
                          "the examples each)", check=_non_negative),
    "ema_decay": Field(0.0, "keep an exponential moving average of the params with this decay "
                       "(0: off), evaluated beside them (ema_eval_*); predict/export "
                       "--use_ema", check=_fraction),
    "clip_grad_norm": Field(0.0, "clip gradients to this global norm before the update (0: "
                            "off; the logged grad_norm is before clipping)", check=_non_negative),
    "grad_accum_steps": Field(1, "micro-batches per update: each device's share of batch_size "
                              "is split into this many, run in sequence (less memory, same "
                              "update)", check=_at_least_one),
    "half_precision": Field("auto", "bf16 compute with fp32 params: True, False or auto (on "
                            "GPU/TPU, off on CPU)", type=object, choices=("auto", True, False)),
    "seed": Field(0, "seed of init, data order, augmentation and dropout"),
    # ---- parallelism ----
    "parallelism.model": Field(1, "1: data parallel; 2: the paper's two towers on two devices",
                               choices=(1, 2, 4)),
    # ---- loop ----
    "log_every_steps": Field(100, "steps per logged training window", check=_at_least_one),
    "eval_every_steps": Field(-1, "steps between evals; <= 0: once per epoch"),
    "checkpoint_every_steps": Field(1000, "steps between checkpoints", check=_at_least_one),
    "keep_checkpoints": Field(3, "newest checkpoints kept (plus the keep_best best)",
                              check=_at_least_one),
    "keep_best": Field(1, "best checkpoints kept by best_metric (besides the newest)",
                       check=_non_negative),
    "best_metric": Field("eval_top1", "what ranks checkpoints for keep_best (a *loss: lowest "
                         "first; else highest)", choices=("eval_top1", "eval_top5", "eval_loss",
                                                          "ema_eval_top1", "ema_eval_loss")),
    "profile": Field(False, "write a profiler trace of a few steps"),
    "writers": Field("tensorboard", "comma-separated metric writers besides metrics.jsonl and "
                     "the console: tensorboard, wandb, mlflow (each imported only when named)",
                     check=_writers_check),
    "compilation_cache_dir": Field("~/.cache/alexnet_jax/xla", "persistent XLA compilation "
                                   "cache, so reruns skip compiling; empty: off"),
    "allow_config_change": Field(False, "resume a workdir whose config.json differs"),
}

# Keys that may change when a run resumes: how long it runs, how often it
# reports, where its data lives; not what it computes.
RESUMABLE_KEYS = frozenset({
    "num_train_steps", "num_epochs", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "keep_best", "profile", "prefetch_batches",
    "writers", "input_workers", "eval_batch_size", "data_dir", "tfds_data_dir",
    "allow_config_change", "compilation_cache_dir",
})


def base_config() -> ml_collections.ConfigDict:
  """Every key with the paper's values (ImageNet, `paper` variant, SGD, ÷10 on plateau)."""
  c = ml_collections.ConfigDict()
  for key, field in FIELDS.items():
    *parents, leaf = key.split(".")
    node = c
    for parent in parents:
      if parent not in node:
        node[parent] = ml_collections.ConfigDict()
      node = node[parent]
    if field.type is object:
      node[leaf] = config_dict.FieldReference(field.default, field_type=object)
    elif field.default is None:
      node[leaf] = config_dict.placeholder(field.type)
    else:
      node[leaf] = field.default
  return c


def parse_arg(arg) -> dict:
  """Parses a config argument `a=1,b,c=x` into {'a': '1', 'b': True, 'c': 'x'}."""
  out = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if part:
      key, sep, value = part.partition("=")
      out[key.strip()] = value.strip() if sep else True
  return out


def apply_arg(c, arg, **presets):
  """Applies a config file's `:ARG`: `variant=NAME` (every file takes it), then each named
  preset of the file (`presets`: name -> fn(config) changing it in place)."""
  opts = parse_arg(arg)
  if "variant" in opts:
    c.model.variant = opts.pop("variant")
  for name in [name for name in opts if name in presets]:
    presets[name](c)
    del opts[name]
  if opts:
    known = ", ".join(["variant=NAME", *presets])
    raise ValueError(f"Unknown config arguments {sorted(opts)}; known: {known}.")
  return c


def _fail(key, value, why):
  raise ValueError(f"config.{key}={value!r} is not allowed: {why}.")


def validate(config, *, num_devices: int | None = None) -> None:
  """Raises ValueError naming the key, the value and what is allowed."""
  for key, field in FIELDS.items():
    value = config[key]
    if value is None and field.default is None:
      continue
    allowed = field.allowed()
    if allowed is not None and value not in allowed:
      _fail(key, value, f"choose one of {', '.join(map(repr, allowed))}")
    if field.check is not None:
      why = field.check(value)
      if why:
        _fail(key, value, why)
  if config.num_train_steps <= 0 and not config.num_epochs > 0:
    _fail("num_epochs", config.num_epochs, "it must be > 0 unless config.num_train_steps is > 0")
  if config.resize_size < config.image_size:
    _fail("resize_size", config.resize_size, f"it must be >= image_size ({config.image_size})")
  if config.dataset in ("imagefolder", "prepared") and not config.data_dir:
    _fail("data_dir", config.data_dir,
          f"dataset {config.dataset!r} needs --config.data_dir=ROOT"
          + (" with ROOT/train/<class>/* and ROOT/val/<class>/*"
             if config.dataset == "imagefolder" else
             " written by `python -m alexnet_jax.prepare`"))
  if config.parallelism.model > 1 and config.model.variant != "paper":
    _fail("parallelism.model", config.parallelism.model,
          f"tower parallelism splits the 'paper' variant only (model.variant is "
          f"{config.model.variant!r}); use parallelism.model=1")
  if config.best_metric.startswith("ema_") and not config.ema_decay:
    _fail("best_metric", config.best_metric, "it needs config.ema_decay > 0")
  if config.clip_grad_norm and config.parallelism.model > 1:
    _fail("clip_grad_norm", config.clip_grad_norm, "clipping is not implemented with tower "
          "parallelism (parallelism.model > 1)")
  if num_devices:
    for key, unit in (("batch_size", num_devices * config.grad_accum_steps),
                      ("eval_batch_size", num_devices)):
      if config[key] % unit:
        _fail(key, config[key],
              f"the global batch must be a multiple of the data-parallel device count "
              f"{num_devices} (all devices of all processes, divided by parallelism.model)"
              + (f" times grad_accum_steps={config.grad_accum_steps} = {unit}"
                 if unit != num_devices else "") + f"; e.g. {max(1, config[key] // unit) * unit}")


def has_key(config, dotted: str) -> bool:
  """Whether `config` has the (possibly nested, dot-separated) key `dotted`."""
  try:
    config[dotted]
  except (KeyError, TypeError):
    return False
  return True


def closest_key(key: str) -> str | None:
  """The config key most like a misspelled one (for 'did you mean')."""
  match = difflib.get_close_matches(key, list(FIELDS), n=1, cutoff=0.6)
  return match[0] if match else None


def help_text() -> str:
  """Every key with its default and meaning, for `--help`."""
  lines = []
  for key, field in FIELDS.items():
    default = "unset" if field.default is None else repr(field.default)
    lines.append(f"  {key} = {default}\n      {field.help}")
    if field.choices is not None:
      lines.append("      one of: " + ", ".join(map(repr, field.allowed())))
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Config -> objects.
# ----------------------------------------------------------------------------


def compute_dtype(config):
  """bfloat16 when config.half_precision says so (auto: on GPU/TPU), else float32."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  half = config.half_precision
  if half == "auto":
    half = jax.default_backend() != "cpu"
  return jnp.bfloat16 if half else jnp.float32


def create_model(config, num_classes: int):
  """The linen module the config describes."""
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  overrides = {k: v for k, v in config.model.items() if k != "variant"}
  return models.create_model(config.model.variant, num_classes=num_classes,
                             dtype=compute_dtype(config), **overrides)


def from_dict(stored: dict) -> ml_collections.ConfigDict:
  """A config stored as JSON, with keys added since it was written at their defaults.

  Lists become tuples again where the default is a tuple.
  """
  config = base_config()
  flat_defaults = {k: config[k] for k in FIELDS}

  def merge(node, values, prefix):
    for key, value in values.items():
      dotted = prefix + key
      if isinstance(value, dict) and key in node and isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value, dotted + ".")
        continue
      if isinstance(value, list) and isinstance(flat_defaults.get(dotted), tuple):
        value = tuple(value)
      with node.unlocked():
        node[key] = value

  merge(config, stored, "")
  return config


def to_dict(config) -> dict[str, Any]:
  """A JSON-safe dict of a config (tuples become lists)."""
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(config.to_json_best_effort())


# ----------------------------------------------------------------------------
# Finding config files.
# ----------------------------------------------------------------------------


def config_dirs() -> list[pathlib.Path]:
  """Where shipped configs live: `configs/` of a repository checkout, or of the installed package."""
  package = pathlib.Path(__file__).resolve().parent
  return [d for d in (package / "configs", package.parent / "configs") if d.is_dir()]


def shipped_configs() -> list[str]:
  """Names of the shipped configs (`quickstart`, `sweeps/paper_ablations`, ...)."""
  names = set()
  for d in config_dirs():
    for path in d.rglob("*.py"):
      if not path.name.startswith("_"):
        names.add(path.relative_to(d).with_suffix("").as_posix())
  return sorted(names)


def resolve_path(spec: str) -> str:
  """A config file path for `spec`: a path to a .py file, or a shipped config's name.

  `quickstart`, `configs/quickstart.py` and `/abs/path/to/my_config.py` all
  work; a name that matches nothing raises FileNotFoundError listing what is
  shipped.
  """
  if os.path.isfile(spec):
    return spec
  name = spec[:-3] if spec.endswith(".py") else spec
  name = name[len("configs/"):] if name.startswith("configs/") else name
  for d in config_dirs():
    path = d / f"{name}.py"
    if path.is_file():
      return str(path)
  raise FileNotFoundError(
      f"No config file {spec!r}: not a file, nor a shipped config. Shipped configs: "
      f"{', '.join(shipped_configs())}.")


def call_with_arg(fn, arg):
  """`fn(arg)`, or `fn()` for the plain `def get_config():` of the flax examples.

  A function that takes no argument refuses a non-empty `arg` instead of
  silently ignoring it.
  """
  if inspect.signature(fn).parameters:
    return fn(arg or None)
  if arg:
    raise ValueError(f"{fn.__name__}() takes no argument, but the config was given ':{arg}'.")
  return fn()


def load_module(path: str, *functions: str):
  """The config (or sweep) file at `path`, run as a module that defines `functions`."""
  module_spec = importlib.util.spec_from_file_location(
      "alexnet_jax_config_" + pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  for fn in functions:
    if not callable(getattr(module, fn, None)):
      raise ValueError(f"{path} defines no {fn}() function (a config file needs get_config; "
                       "a sweep file get_config and get_sweep).")
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` (or `get_config()`) of a config given as `NAME_OR_PATH[:ARG]`."""
  path, _, arg = spec.partition(":")
  return call_with_arg(load_module(resolve_path(path), "get_config").get_config, arg)
