"""Figure 3 of the paper: a checkpoint's conv1 filters as image grids, one per tower.

    python -m alexnet_jax.filters --workdir=DIR [--step=N] [--output=DIR/conv1_filters.png]

The paper saw the two GPUs specialise: one tower's conv1 filters came out
largely colour-agnostic (oriented edges, frequencies), the other's largely
colour-specific (colour blobs). For a two-tower variant (`paper`, whose conv2
reads each half of conv1's maps separately) the grid is drawn per tower, with
a colour score per tower: the fraction of a filter's energy that is not
shared by its three input channels, ||W - mean_c W||^2 / ||W||^2, averaged
over the tower's filters (0: the same kernel in R, G and B, a grey filter;
towards 2/3: channels that oppose each other). Other variants get one grid.
"""

from __future__ import annotations

import sys

import numpy as np

from alexnet_jax import workdir as workdir_lib


def colour_scores(kernel: np.ndarray) -> np.ndarray:
  """[k, k, 3, filters] conv1 kernel -> [filters] share of each filter's energy in colour."""
  kernel = np.asarray(kernel, np.float64)
  grey = kernel.mean(axis=2, keepdims=True)
  return ((kernel - grey) ** 2).sum(axis=(0, 1, 2)) / np.maximum(
      (kernel ** 2).sum(axis=(0, 1, 2)), 1e-30)


def filter_grid(kernel: np.ndarray, *, columns: int = 8, scale: int = 4) -> np.ndarray:
  """[k, k, 3, filters] -> uint8 RGB image: each filter scaled to [0, 255] alone, in a grid."""
  k, _, _, n = kernel.shape
  rows = -(-n // columns)
  cell = k * scale + 2
  grid = np.full((rows * cell + 2, columns * cell + 2, 3), 255, np.uint8)
  for i in range(n):
    f = kernel[..., i]
    f = (f - f.min()) / max(f.max() - f.min(), 1e-12)
    f = np.kron(f, np.ones((scale, scale, 1)))  # nearest-neighbour upscaling
    r, c = divmod(i, columns)
    grid[2 + r * cell:2 + r * cell + k * scale,
         2 + c * cell:2 + c * cell + k * scale] = (255 * f).astype(np.uint8)
  return grid


def towers(variant: str) -> int:
  """How many towers conv1's filters split into (the groups of conv2)."""
  from alexnet_jax.models import alexnet  # pylint: disable=g-import-not-at-top
  return alexnet.ARCHITECTURES[variant].convs[1].groups


def write_figure(kernel: np.ndarray, variant: str, output) -> list[dict]:
  """Writes OUTPUT (all towers side by side, labelled by score); returns per-tower stats."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n_towers = towers(variant)
  parts = np.split(np.asarray(kernel), n_towers, axis=-1)
  stats, grids = [], []
  for t, part in enumerate(parts):
    scores = colour_scores(part)
    stats.append({"tower": t, "filters": part.shape[-1], "colour_score": float(scores.mean()),
                  "colour_filters": int((scores > 0.2).sum())})
    grids.append(filter_grid(part, columns=6 if n_towers > 1 else 8))
  gap = np.full((grids[0].shape[0], 16, 3), 255, np.uint8)
  image = np.concatenate(sum(([g, gap] for g in grids), [])[:-1], axis=1)
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  workdir_lib.write_bytes_atomic(output, buffer.getvalue())
  return stats


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m alexnet_jax.filters", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a training workdir")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
  parser.add_argument("--output", default=None, help="PNG path (WORKDIR/conv1_filters.png)")
  args = parser.parse_args(argv)
  from alexnet_jax import checkpoint, inference  # pylint: disable=g-import-not-at-top
  try:
    predictor = inference.load(args.workdir, args.step)
  except (checkpoint.CheckpointError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  variant = str(predictor.config.model.variant)
  output = args.output or str(workdir_lib.path(args.workdir) / "conv1_filters.png")
  stats = write_figure(np.asarray(predictor.params["conv1"]["kernel"]), variant, output)
  print(f"Wrote {output}: conv1 of {variant} at step {predictor.step}, left to right:")
  for s in stats:
    print(f"  tower {s['tower']}: {s['filters']} filters, colour score {s['colour_score']:.3f} "
          f"({s['colour_filters']} with score > 0.2)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
