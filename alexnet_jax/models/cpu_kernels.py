"""Formulations and XLA settings that make AlexNet train fast on XLA:CPU.

1. Convolution weight gradients: jaxlib 0.10 hands convolutions to YNNPACK, which
   runs a weight gradient (a convolution whose "kernel" is the whole output map)
   ~10x slower than XLA's own Eigen convolution (conv2 at batch 64: 2.1 s vs 0.19 s
   of CPU time). `cpu_compiler_options()` takes only the convolutions away from
   YNNPACK for one `jax.jit`.
2. Max-pool gradients: JAX differentiates `reduce_window(max)` through int32 index
   arrays and a scatter, which cost more on CPU than the convolutions around them.
   `max_pool` has a custom VJP that routes the cotangent with pads instead.

Both are numerically the same (convolutions differ ~1e-7 relative: another
library's summation order). They apply only when `model.cpu_kernels` says so
("auto": when JAX's default backend is the CPU); tests/test_cpu_kernels.py proves
each equals the plain formulation.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

# --------------------------------------------------------------------------
# XLA settings.
# --------------------------------------------------------------------------

# The XLA:CPU option and the values verified with jax/jaxlib 0.10.x. The option
# is experimental: another jaxlib may rename it, and an unknown option makes
# compilation fail, so we only pass it for versions we have checked.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# The full list of fusion types that stay on YNNPACK (everything but
# convolutions). The process-wide equivalent, for other programs, is
# XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution.
_YNN_OPTION_VALUE = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
VERIFIED_JAXLIB = ((0, 10),)


def _jaxlib_verified(version: str | None = None) -> bool:
  if version is None:
    import jaxlib  # pylint: disable=g-import-not-at-top
    version = jaxlib.__version__
  try:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return False
  return major_minor in VERIFIED_JAXLIB


def cpu_compiler_options(platform: str | None = None) -> dict:
  """`jax.jit(..., compiler_options=...)` with the same effect, for one program.

  Empty unless `platform` (default: JAX's default backend) is "cpu" and the
  jaxlib is verified, so it can be passed unconditionally.
  """
  platform = platform or jax.default_backend()
  if platform != "cpu" or not _jaxlib_verified():
    return {}
  return {_YNN_OPTION: _YNN_OPTION_VALUE}


# --------------------------------------------------------------------------
# When the model uses the CPU formulations.
# --------------------------------------------------------------------------

SETTINGS = ("auto", "on", "off")


def enabled(setting: str) -> bool:
  """Resolves a setting ("auto", "on", "off") at trace time; auto: the default backend is a CPU."""
  if setting == "auto":
    return jax.default_backend() == "cpu"
  return setting == "on"


def compiler_options(setting: str) -> dict:
  """`jax.jit` compiler options for a program whose model has `cpu_kernels=setting`, so
  one switch turns all of the CPU work on or off without touching XLA_FLAGS."""
  return cpu_compiler_options() if enabled(setting) else {}


# --------------------------------------------------------------------------
# Max pooling with a scatter-free gradient.
# --------------------------------------------------------------------------


def _window_slices(x, window, strides, out_hw):
  """x at window offset (i, j) of every output position, in row-major order."""
  (kh, kw), (sh, sw), (oh, ow) = window, strides, out_hw
  b, _, _, c = x.shape
  for i in range(kh):
    for j in range(kw):
      yield lax.slice(x, (0, i, j, 0), (b, i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1, c),
                      (1, sh, sw, 1))


def _materialize(a, fill):
  """`a` (all elements <= `fill`), computed once into a buffer of its own.

  XLA fuses cheap elementwise producers into every consumer, recomputing them
  per use, and XLA:CPU drops optimisation barriers. A variadic reduction
  (value, position) over [a, fill] (the argmin pattern) is neither simplified
  away nor fused into its consumers, so `a` is evaluated exactly once.
  """
  values = jnp.stack([a, jnp.full_like(a, fill)], axis=-1)
  positions = lax.broadcasted_iota(jnp.int8, values.shape, a.ndim)

  def smaller(x, y):
    take_x = (x[0] < y[0]) | ((x[0] == y[0]) & (x[1] <= y[1]))
    return lax.select(take_x, x[0], y[0]), lax.select(take_x, x[1], y[1])

  big = jnp.array(jnp.iinfo(a.dtype).max, a.dtype)
  out, _ = lax.reduce((values, positions), (big, jnp.int8(127)), smaller, (a.ndim,))
  return out


def _winner_index(x, y, window, strides):
  """Offset (row-major) of the first window element equal to the max."""
  count = window[0] * window[1]
  dtype = jnp.int8 if count < 127 else jnp.int32
  slices = list(_window_slices(x, window, strides, y.shape[1:3]))
  index = jnp.full(y.shape, count, dtype)
  for n in reversed(range(count)):  # the earliest match is written last
    index = jnp.where(slices[n] == y, jnp.asarray(n, dtype), index)
  return _materialize(index, count)


def _route_back(index, g, window, strides, in_hw):
  """d(input) from d(output): each output's cotangent goes to its winner.

  Input row r = s*h + i (window h, offset i). Grouping rows by r mod s gives
  s "phase" planes; plane p holds, at row a, the sum over offsets i = p (mod s)
  of window a - i//s: plain shifted pads. The planes are interleaved by a
  stack and a reshape and cropped to the input size. Same for columns.
  """
  (kh, kw), (sh, sw), (height, width) = window, strides, in_hw
  b, oh, ow, c = g.shape
  rows, cols = -(-height // sh), -(-width // sw)  # plane sizes
  zero = jnp.zeros((), g.dtype)
  planes = []
  for p in range(sh):
    row_planes = []
    for q in range(sw):
      acc = None
      for i in range(p, kh, sh):
        for j in range(q, kw, sw):
          term = jnp.where(index == i * kw + j, g, zero)
          di, dj = i // sh, j // sw
          term = lax.pad(term, zero, [(0, 0, 0), (di, rows - oh - di, 0),
                                      (dj, cols - ow - dj, 0), (0, 0, 0)])
          acc = term if acc is None else acc + term
      row_planes.append(jnp.zeros((b, rows, cols, c), g.dtype) if acc is None else acc)
    # Interleave columns: [b, rows, cols, sw, c] -> [b, rows, cols*sw, c].
    planes.append(jnp.stack(row_planes, axis=3).reshape(b, rows, cols * sw, c))
  # Interleave rows: [b, rows, sh, cols*sw, c] -> [b, rows*sh, cols*sw, c].
  dx = jnp.stack(planes, axis=2).reshape(b, rows * sh, cols * sw, c)
  return dx[:, :height, :width, :]


def _sliced_max_pool(x, window, strides):
  """The maxima of `reduce_window(max)`, as an elementwise max of k*k strided slices.

  Max is exact, so the values are identical; being elementwise, XLA fuses it
  with its producer (bias add and ReLU) and with the winner-index computation
  instead of materialising the activation for a separate reduce-window
  (~3x cheaper on XLA:CPU).
  """
  out_hw = ((x.shape[1] - window[0]) // strides[0] + 1, (x.shape[2] - window[1]) // strides[1] + 1)
  return functools.reduce(lax.max, _window_slices(x, window, strides, out_hw))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, strides):
  return _sliced_max_pool(x, window, strides)


def _max_pool_fwd(x, window, strides):
  y = _sliced_max_pool(x, window, strides)
  return y, (_winner_index(x, y, window, strides), x.shape[1:3])


def _max_pool_bwd(window, strides, residuals, g):
  index, in_hw = residuals
  return (_route_back(index, g, window, strides, in_hw),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x, window: Sequence[int], strides: Sequence[int]):
  """`flax.linen.max_pool(x, window, strides, padding="VALID")` on NHWC input.

  Same values; the gradient goes to the first maximum of each window (as with
  `jax.grad` of the plain pool), computed without scatter. Forward-mode
  differentiation (jvp) is not supported (custom VJP).
  """
  window, strides = tuple(int(w) for w in window), tuple(int(s) for s in strides)
  if x.ndim != 4 or len(window) != 2 or len(strides) != 2:
    raise ValueError(f"max_pool expects NHWC input and 2-D window/strides, got input "
                     f"shape {x.shape}, window {window}, strides {strides}.")
  if min(window) < 1 or min(strides) < 1:
    raise ValueError(f"max_pool window and strides must be >= 1, got {window}, {strides}.")
  if x.shape[1] < window[0] or x.shape[2] < window[1]:
    raise ValueError(f"max_pool input {x.shape[1:3]} is smaller than the window {window}.")
  return _max_pool(x, window, strides)
