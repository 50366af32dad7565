"""Local response normalisation across channels, with a hand-written gradient.

The paper (Sec. 3.3) writes, for the activity a^i at channel i,

    b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta

with k=2, n=5, alpha=1e-4, beta=0.75. We follow `torch.nn.LocalResponseNorm`
(and Caffe and cuda-convnet): alpha is divided by n, so the paper's numbers
reproduce the reading every released AlexNet uses; `alpha=n * 1e-4` gives the
formula as printed (TensorFlow's `local_response_normalization`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _window_sum(values, before, after):
  """Sum over channels c - before .. c + after of the last axis (zero padded).

  A handful of shifted slices added together: plain element-wise work that
  XLA fuses into one loop, where `reduce_window` or a banded matmul over the
  channels cost several times more on CPU.
  """
  channels = values.shape[-1]
  padded = jnp.pad(values, [(0, 0)] * (values.ndim - 1) + [(before, after)])
  total = padded[..., 0:channels]
  for i in range(1, before + after + 1):
    total = total + padded[..., i:i + channels]
  return total


def _neg_pow(d, beta):
  """d ** -beta; beta = 0.75 as two rsqrts, ~3x cheaper than pow on CPU."""
  if beta == 0.75:
    return jax.lax.rsqrt(d) * jax.lax.rsqrt(jnp.sqrt(d))
  if beta == 0.5:
    return jax.lax.rsqrt(d)
  return jnp.power(d, -beta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
  """`torch.nn.LocalResponseNorm` over the last axis; see `LocalResponseNorm`."""
  return _lrn_fwd(x, size, alpha, beta, k)[0]


def _lrn_fwd(x, size, alpha, beta, k):
  denom = k + (alpha / size) * _window_sum(x * x, size // 2, (size - 1) // 2)
  scale = _neg_pow(denom, beta)
  return x * scale, (x, denom, scale)


def _lrn_bwd(size, alpha, beta, k, residuals, g):
  # y_c = x_c d_c^-b with d_c = k + a/n sum_{j in W(c)} x_j^2, so
  # dL/dx_j = g_j d_j^-b - (2 a b / n) x_j sum_{c: j in W(c)} g_c x_c d_c^(-b-1).
  # The transposed window runs c - (size-1)//2 .. c + size//2. Written out by
  # hand because autodiff of the slices and pow is ~3x slower on XLA:CPU.
  del k
  x, denom, scale = residuals
  t = g * x * scale / denom
  back = _window_sum(t, (size - 1) // 2, size // 2)
  return (g * scale - (2.0 * alpha * beta / size) * x * back,)


local_response_norm.defvjp(_lrn_fwd, _lrn_bwd)


class LocalResponseNorm(nn.Module):
  """LRN over the last axis (NHWC channels).

  The window holds channels i - n//2 .. i + (n-1)//2, zeros beyond the edges.
  It runs in float32 (float64 for float64 input) whatever the input dtype:
  bf16 squares summed and raised to a power lose too many bits.
  """

  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0

  @nn.compact
  def __call__(self, x):
    if self.size < 1:
      raise ValueError(f"LocalResponseNorm size must be >= 1, got {self.size}.")
    compute = jnp.promote_types(x.dtype, jnp.float32)
    y = local_response_norm(x.astype(compute), int(self.size), float(self.alpha),
                            float(self.beta), float(self.k))
    return y.astype(x.dtype)

