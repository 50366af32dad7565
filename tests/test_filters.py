"""`alexnet_jax.filters`: the paper's Figure 3 (conv1 filters per tower, with a colour score)."""

import numpy as np
from PIL import Image

from alexnet_jax import filters


def test_colour_score_is_zero_for_grey_filters_and_two_thirds_for_opposed_channels():
  rng = np.random.default_rng(0)
  grey = np.repeat(rng.normal(size=(11, 11, 1, 4)), 3, axis=2)  # the same kernel in R, G, B
  opposed = grey * np.array([1.0, -1.0, 0.0])[None, None, :, None]
  kernel = np.concatenate([grey, opposed], axis=-1)
  scores = filters.colour_scores(kernel)
  np.testing.assert_allclose(scores[:4], 0.0, atol=1e-12)
  # mean over channels is 0, so all of an opposed filter's energy is colour
  np.testing.assert_allclose(scores[4:], 1.0)
  red_only = np.zeros((3, 3, 3, 1))
  red_only[..., 0, 0] = 1.0
  # channels (1, 0, 0): grey part 1/3 each; residual (2/3, -1/3, -1/3) -> 6/9 of the energy
  np.testing.assert_allclose(filters.colour_scores(red_only), [2 / 3])


def test_the_paper_variant_is_drawn_per_tower(tmp_path):
  assert filters.towers("paper") == 2 and filters.towers("torchvision") == 1
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(11, 11, 3, 96))
  kernel[..., :48] = kernel[..., :1, :48]  # tower 0 grey, tower 1 random colour
  stats = filters.write_figure(kernel, "paper", tmp_path / "f.png")
  assert [s["filters"] for s in stats] == [48, 48]
  assert stats[0]["colour_score"] < 1e-9 < 0.5 < stats[1]["colour_score"]
  image = np.asarray(Image.open(tmp_path / "f.png"))
  cell = 11 * 4 + 2
  assert image.shape == (8 * cell + 2, 2 * (6 * cell + 2) + 16, 3)  # 6 x 8 filters per tower
  left = image[:, :6 * cell + 2]
  assert np.all(left[..., 0] == left[..., 1]) and np.all(left[..., 1] == left[..., 2])
