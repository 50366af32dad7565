"""Which stored form feeds a batch cheapest: the measurement behind `alexnet_jax.prepare`.

    pip install grain==0.2.18      # ArrayRecord reads go through Grain, as users would
    python benchmarks/record_formats.py --data_dir=../shared/data/flowers-mini

Prepares the folder's training photos once (256x256 uint8, as `prepare` stores
them), writes the same images two more ways, and times assembling random
batches of 64 into one uint8 buffer, in one process on one core (CPU seconds,
so other load on the machine counts little):

  fixed records   `alexnet_jax.data.prepared`'s reader: one pread per example
  ArrayRecord     the same raw bytes, one uncompressed record per chunk, read with
                  grain's ArrayRecordDataSource
  ArrayRecord     each image re-encoded as a JPEG (quality 90), read the
  + JPEG          same way and decoded with PIL (what a smaller dataset costs)

Batches are drawn in a new random order each time, as a shuffled epoch reads.
"""

import argparse
import io
import os
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

BATCH = 64


def _time_batches(read_batch, n, batches, seed=0):
  """CPU seconds per image over `batches` random batches (after one warm-up batch)."""
  from benchmarks.throughput import cpu_seconds  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  read_batch(rng.integers(0, n, BATCH))
  start = cpu_seconds()
  for _ in range(batches):
    read_batch(rng.integers(0, n, BATCH))
  return (cpu_seconds() - start) / (batches * BATCH)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="an image folder: ROOT/train/<class>/*")
  parser.add_argument("--batches", type=int, default=200)
  args = parser.parse_args(argv)

  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # One core: a per-core figure.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  import grain.python as grain  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from alexnet_jax import config_lib, prepare  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import prepared  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    config = config_lib.load("default:variant=seed")
    config.dataset, config.data_dir = "imagefolder", args.data_dir
    manifest = prepare.prepare(config, tmp / "prepared")
    reader = prepared._Reader(tmp / "prepared", manifest, "train")  # pylint: disable=protected-access
    n, size = reader.num_examples, reader.size
    images = np.empty((n, size, size, 3), np.uint8)
    reader.read(np.arange(n), images)

    def write_array_record(path, payloads):
      # One record per chunk, no compression: the cheapest random access ArrayRecord offers.
      writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1,uncompressed")
      for payload in payloads:
        writer.write(payload)
      writer.close()
      return grain.ArrayRecordDataSource([str(path)])

    def jpeg(image):
      buf = io.BytesIO()
      Image.fromarray(image).save(buf, format="JPEG", quality=90)
      return buf.getvalue()

    raw_source = write_array_record(tmp / "raw.array_record", (im.tobytes() for im in images))
    jpegs = [jpeg(im) for im in images]
    jpeg_source = write_array_record(tmp / "jpeg.array_record", jpegs)
    out = np.empty((BATCH, size, size, 3), np.uint8)

    def fixed_records(indices):
      reader.read(indices, out)

    def array_record_raw(indices):
      for i, record in enumerate(raw_source.__getitems__(indices.tolist())):
        out[i] = np.frombuffer(record, np.uint8).reshape(size, size, 3)

    def array_record_jpeg(indices):
      for i, record in enumerate(jpeg_source.__getitems__(indices.tolist())):
        out[i] = np.asarray(Image.open(io.BytesIO(record)).convert("RGB"))

    rows = [("fixed records (prepare's format)", size * size * 3, fixed_records),
            ("ArrayRecord, raw uint8", size * size * 3, array_record_raw),
            ("ArrayRecord, JPEG q90 + PIL decode", int(np.mean([len(j) for j in jpegs])),
             array_record_jpeg)]
    print(f"{n} training photos of {args.data_dir} at {size}x{size}, random batches of {BATCH}, "
          f"one core, load {os.getloadavg()[0]:.1f}:")
    print("| stored form | bytes per image | CPU per image | images per CPU-second |")
    print("|---|---:|---:|---:|")
    for name, nbytes, fn in rows:
      seconds = _time_batches(fn, n, args.batches)
      print(f"| {name} | {nbytes:,} | {1e6 * seconds:.0f} µs | {1 / seconds:,.0f} |", flush=True)


if __name__ == "__main__":
  main()
