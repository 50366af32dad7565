"""The pieces both AlexNet programs are built from: activations, widths, initialisers,
pooling and the conv/dense layers themselves (alexnet.py and towers.py)."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax.models import cpu_kernels

ACTIVATION_FNS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,  # slope 0.01, as torch.nn.LeakyReLU
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
}
ACTIVATIONS = tuple(ACTIVATION_FNS)
# paper: N(0, 0.01) weights, biases 1 in the layers the paper names, else 0.
# seed: Kaiming-normal fan-out (ReLU gain) convs, N(0, 0.01) dense, zero biases.
# torch: PyTorch's default (kaiming_uniform_, a=sqrt(5)): U(+-1/sqrt(fan_in)),
#   weights and biases alike; what torchvision's AlexNet keeps.
# flax: LeCun-normal kernels, zero biases.
INITS = ("paper", "seed", "torch", "flax")


def scaled_width(width: int, multiplier: float, multiple: int = 1) -> int:
  """Width times `multiplier`, rounded to a positive multiple of `multiple`."""
  return max(multiple, int(round(width * multiplier / multiple)) * multiple)


def _uniform(bound):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def initializers(scheme: str, *, bias_one: bool, is_conv: bool, fan_in: int) -> dict:
  """kernel_init and bias_init of a layer under `scheme` (one of INITS)."""
  if scheme == "paper":
    kernel = nn.initializers.normal(stddev=0.01)
    bias = nn.initializers.ones if bias_one else nn.initializers.zeros
  elif scheme == "seed":
    kernel = (nn.initializers.variance_scaling(2.0, "fan_out", "normal") if is_conv
              else nn.initializers.normal(stddev=0.01))
    bias = nn.initializers.zeros
  elif scheme == "torch":
    kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    bias = _uniform(1.0 / math.sqrt(fan_in))
  else:
    kernel, bias = nn.initializers.lecun_normal(), nn.initializers.zeros
  return dict(kernel_init=kernel, bias_init=bias)


def conv(spec, features: int, *, groups: int, dtype, init_scheme: str, fan_in: int,
         name: str | None = None) -> nn.Conv:
  """The convolution of a ConvSpec with `features` outputs; params stay float32."""
  return nn.Conv(features, (spec.kernel, spec.kernel), strides=(spec.stride, spec.stride),
                 padding=[(spec.padding, spec.padding)] * 2, feature_group_count=groups,
                 dtype=dtype, param_dtype=jnp.float32, name=name or spec.name,
                 **initializers(init_scheme, bias_one=spec.bias_one, is_conv=True,
                                fan_in=fan_in))


def dense(features: int, *, dtype, init_scheme: str, bias_one: bool, fan_in: int,
          name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  **initializers(init_scheme, bias_one=bias_one, is_conv=False, fan_in=fan_in))


def max_pool_fn(window: int, setting: str = "off"):
  """Max pooling, window x window with stride 2 (VALID); cpu_kernels' form when enabled."""
  if cpu_kernels.enabled(setting):
    return functools.partial(cpu_kernels.max_pool, window=(window, window), strides=(2, 2))
  return functools.partial(nn.max_pool, window_shape=(window, window), strides=(2, 2),
                           padding="VALID")


def adaptive_avg_pool(x, output_size):
  """`torch.nn.AdaptiveAvgPool2d` on NHWC: bin i covers [floor(i*H/h), ceil((i+1)*H/h))."""
  out_h, out_w = output_size
  _, h, w, _ = x.shape
  if (h, w) == (out_h, out_w):
    return x

  def pool_axis(y, axis, size_in, size_out):
    if size_in % size_out == 0:
      shape = list(y.shape)
      shape[axis:axis + 1] = [size_out, size_in // size_out]
      return y.reshape(shape).mean(axis=axis + 1)
    bins = []
    for i in range(size_out):
      start = (i * size_in) // size_out
      end = -((-(i + 1) * size_in) // size_out)
      bins.append(jax.lax.slice_in_dim(y, start, end, axis=axis).mean(axis=axis, keepdims=True))
    return jnp.concatenate(bins, axis=axis)

  return pool_axis(pool_axis(x, 1, h, out_h), 2, w, out_w)
