"""Convert a dataset once into a prepared dataset (see `alexnet_jax.data.prepared`).

    python -m alexnet_jax.prepare --config=CONFIG[:ARG] [--config.KEY=VALUE ...] --output=DIR

The config names the source exactly as for training (`dataset`, `data_dir`,
`tfds_data_dir`, splits) and the stored size (`resize_size`, `eval_resize`).
Its training split becomes DIR's "train", its eval split DIR's "validation".
Then train with the same config plus `--config.dataset=prepared
--config.data_dir=DIR`.

Decoding and resizing run in parallel on every core. The work is written in
shards; killed, a rerun of the same command continues after the last complete
shard. DIR/dataset.json is written last, so an interrupted preparation is
never taken for a dataset. Files that cannot be decoded are left out, named
in the log and listed in dataset.json.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time

from etils import epath

from alexnet_jax import workdir as workdir_lib
from alexnet_jax.data import prepared

PROGRESS = ".progress.json"
_SOURCE_KEYS = ("dataset", "data_dir", "tfds_data_dir", "train_split", "eval_split",
                "resize_size", "eval_resize")


def _processed(config, store_split):
  """fn(encoded or decoded image) -> uint8 [R, R, 3]: eval's resize and centre crop at R."""
  from alexnet_jax.data import augment  # pylint: disable=g-import-not-at-top
  size = int(config.resize_size)
  mode = config.eval_resize if store_split == "validation" else "shorter_side"
  return functools.partial(augment.eval_crops, image_size=size, resize_size=size,
                           eval_resize=mode)


def _prepare_split(source, config, spec, store_split, output, progress, shard_size):
  """Writes one split's shards, resuming after the last complete one; returns its entry."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  state = progress["splits"].setdefault(store_split, {"shards": [], "consumed": 0,
                                                      "skipped": []})
  records = source.eval_records(spec, 0, 1)
  n = records.num_examples
  if state.get("done"):
    return state
  process = _processed(config, store_split)
  start = state["consumed"]

  def example(position, record):
    ex = records.load(record)
    return position, process(ex["image"]), tf.cast(ex["label"], tf.int32)

  ds = records.epoch(tf.constant(0, tf.int64)).skip(start).enumerate(start=start)
  ds = ds.map(example, num_parallel_calls=sources.available_cores(), deterministic=True)
  ds = ds.ignore_errors(log_warning=False).prefetch(64)
  images, labels, expected = [], [], start

  def flush(consumed):
    index = len(state["shards"])
    stem = f"{store_split}-{index:05d}"
    workdir_lib.write_bytes_atomic(output / f"{stem}.images", np.stack(images).tobytes())
    workdir_lib.write_bytes_atomic(output / f"{stem}.labels", np.asarray(labels, "<i4").tobytes())
    state["shards"].append({"images": f"{stem}.images", "labels": f"{stem}.labels",
                            "count": len(labels)})
    state["consumed"] = consumed
    workdir_lib.write_json_atomic(output / PROGRESS, progress)
    images.clear()
    labels.clear()

  bar = tqdm(total=n, initial=start, unit="img", desc=f"{store_split} ({spec})",
             disable=not sys.stderr.isatty())
  last_log = time.time()
  for position, image, label in ds.as_numpy_iterator():
    for missing in range(expected, int(position)):  # ignore_errors dropped these.
      name = _describe(records, missing)
      state["skipped"].append(name)
      logging.warning("Leaving out %s: it cannot be decoded.", name)
    expected = int(position) + 1
    images.append(image)
    labels.append(int(label))
    bar.update(expected - bar.n)
    if len(images) == shard_size:
      flush(expected)
    if not bar.disable or time.time() - last_log < 30:
      continue
    last_log = time.time()
    logging.info("%s: %d/%d images.", store_split, expected, n)
  for missing in range(expected, n):
    name = _describe(records, missing)
    state["skipped"].append(name)
    logging.warning("Leaving out %s: it cannot be decoded.", name)
  if images:
    flush(n)
  bar.close()
  state["consumed"], state["done"] = n, True
  workdir_lib.write_json_atomic(output / PROGRESS, progress)
  return state


def _describe(records, position):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for record in records.epoch(tf.constant(0, tf.int64)).skip(position).take(1):
    return records.describe(record)
  return f"example {position}"


def _changes(recorded: dict, wanted: dict) -> str:
  """How a recorded preparation (progress file or manifest) differs from `wanted`, in words."""
  had, had_files = recorded.get("source") or {}, recorded.get("files") or {}
  changes = [f"{k} was {had.get(k)!r}, now {v!r}" for k, v in wanted["source"].items()
             if had.get(k) != v]
  if not had_files:
    changes.append("no record of the source's files (an older version prepared it)")
  elif had_files != wanted["files"]:
    changes.append("the source's files changed: " + ", ".join(
        f"{split} {had_files.get(split)} then, {n} now" for split, n in wanted["files"].items()
        if split != "fingerprint") + " examples")
  return "; ".join(changes)


def prepare(config, output, *, shard_size: int = 2048) -> dict:
  """Prepares config's training and eval splits into `output`; returns the manifest.

  Everything is checked before the first write: a finished or interrupted
  preparation in `output` is reused only if it records this very request
  (source config keys and the source's file list).
  """
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import sources  # pylint: disable=g-import-not-at-top
  if config.dataset == "prepared":
    raise ValueError("config.dataset is already 'prepared': name the source to convert "
                     "(a TFDS name, imagefolder with data_dir, sklearn_digits).")
  config_lib.validate(config)
  output = epath.Path(output)
  source = sources.create(config)
  info = sources.dataset_info(config)
  specs = (("train", info.train_split), ("validation", info.eval_split))
  source_keys = {k: config_lib.to_dict(config)[k] for k in _SOURCE_KEYS}
  source_keys.update(train_split=info.train_split, eval_split=info.eval_split)
  # What the source holds (DatasetInfo.fingerprint: for folders, a digest of the file list).
  wanted = {"source": source_keys, "files": {"train": info.num_train_examples,
                                             "validation": info.num_eval_examples,
                                             "fingerprint": info.fingerprint}}
  if (output / prepared.MANIFEST).exists():
    manifest = prepared.read_manifest(output)
    changed = _changes(manifest, wanted)
    if changed:
      raise ValueError(f"{output} holds a different prepared dataset ({changed}); choose a new "
                       "--output or delete it.")
    logging.info("%s is already prepared (%s).", output, manifest["summary"])
    return manifest
  if (output / PROGRESS).exists():
    progress = workdir_lib.read_json(output / PROGRESS, "the preparation's progress file")
    changed = _changes(progress, wanted)
    if changed:
      raise ValueError(f"{output} holds an interrupted preparation whose source has changed "
                       f"since ({changed}): delete {output} or use a new --output.")
    logging.info("Resuming the preparation in %s.", output)
  else:
    output.mkdir(parents=True, exist_ok=True)
    progress = dict(wanted, splits={})
    workdir_lib.write_json_atomic(output / PROGRESS, progress)
  logging.info("Preparing %s into %s at %dx%d.", info.describe(), output, config.resize_size,
               config.resize_size)
  splits = {}
  for store_split, spec in specs:
    state = _prepare_split(source, config, spec, store_split, output, progress, shard_size)
    splits[store_split] = {"num_examples": sum(s["count"] for s in state["shards"]),
                           "shards": state["shards"], "skipped": state["skipped"],
                           "from": spec}
  size = int(config.resize_size)
  record = size * size * 3 + 4
  total = sum(s["num_examples"] for s in splits.values())
  manifest = {
      "format": prepared.FORMAT, "version": prepared.VERSION, "image_size": size,
      "eval_resize": config.eval_resize, "class_names": list(info.class_names),
      "source": source_keys, "files": wanted["files"], "splits": splits,
      "bytes_per_example": record,
      "summary": ", ".join(f"{k}: {v['num_examples']} examples" for k, v in splits.items())
                 + f"; {record * total / 2**30:.2f} GiB",
  }
  workdir_lib.write_json_atomic(output / prepared.MANIFEST, manifest)
  (output / PROGRESS).unlink()
  logging.info("Prepared %s: %s.", output, manifest["summary"])
  return manifest


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments {argv[1:]}")
  runtime.hide_accelerators_from_tensorflow()
  runtime.quiet_library_logs()
  flag_values = flags.FLAGS
  try:
    prepare(flag_values.config, flag_values.output, shard_size=flag_values.shard_size)
  except (ValueError, FileNotFoundError, PermissionError) as e:
    raise SystemExit(f"error: {e}") from None


def run(argv=None):
  """`python -m alexnet_jax.prepare` / `alexnet-prepare`: checks the config like training does."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_startup()
  argv = list(sys.argv if argv is None else argv)
  try:
    argv = cli.check_config_args(argv)
  except cli.UsageError as e:
    raise SystemExit(f"error: {e}") from None
  config_flags.DEFINE_config_file("config", None, "Config naming the source (name or path[:arg]).",
                                  lock_config=True)
  flags.DEFINE_string("output", None, "Directory to write the prepared dataset to.")
  flags.DEFINE_integer("shard_size", 2048, "Examples per shard file.")
  flags.mark_flags_as_required(["config", "output"])
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
