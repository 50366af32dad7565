"""Wall images/s of the prepared reader by thread count, cold and hot.

    python benchmarks/reader.py --data_dir=PREPARED --workers=1,2 [--batch_size=256]

For each thread count: cold (the split's shard files dropped from the page cache
with posix_fadvise, then at most one epoch, so that every read misses), then hot
(the same batches again; `--batches` of them once the cold pass has read the whole
split). The clock runs from the iterator's creation to its last batch: what the
training loop would wait for. Batch order and bytes are the training run's.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import throughput as benchmark  # noqa: E402  pylint: disable=g-import-not-at-top


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", required=True, help="a prepared dataset")
  p.add_argument("--workers", default="1,2", help="thread counts to measure")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--batches", type=int, default=200,
                 help="batches timed hot (cold: at most one epoch of them)")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  benchmark.print_cpu(benchmark.cpu_info())
  rows = []
  for workers in [int(w) for w in args.workers.split(",")]:
    config = benchmark.prepared_config(args.data_dir, args.batch_size, workers=workers)
    rows.append(benchmark.reader_rates(config, batches=args.batches))
    cold = rows[-1]["cold_images_per_sec"]
    print(f"{workers} threads, batch {args.batch_size}: cold "
          + ("n/a" if cold is None else f"{cold:,.0f}")
          + f", hot {rows[-1]['hot_images_per_sec']:,.0f} images/s", flush=True)
  for row in rows[1:]:
    print(f"{row['workers']} threads / {rows[0]['workers']}: hot "
          f"{row['hot_images_per_sec'] / rows[0]['hot_images_per_sec']:.2f}x"
          + (f", cold {row['cold_images_per_sec'] / rows[0]['cold_images_per_sec']:.2f}x"
             if row["cold_images_per_sec"] else ""))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  main()
