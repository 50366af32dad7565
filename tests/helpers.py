"""Small shared pieces for tests: a tiny model and synthetic batches."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


class TinyNet(nn.Module):
  """A two-layer conv net: enough structure to exercise the steps, fast to compile."""
  num_classes: int = 10
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(32)(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def random_batch(batch_size, image_size=16, num_classes=10, seed=0, mask=None):
  rng = np.random.default_rng(seed)
  batch = {
      "image": rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
      "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32),
  }
  if mask is not None:
    batch["mask"] = np.asarray(mask, bool)
  return batch
