"""AlexNet in PyTorch, written out by hand: the one reference the tests and benchmarks share.

The layouts below are spelled out from their sources (the 2012 paper,
torchvision's `alexnet`, the seed project), deliberately not derived from
`alexnet_jax.models`, so a test that compares the two compares independent
implementations. Modules follow torchvision's layout (`features`, `avgpool`,
`classifier`; NCHW; flatten in C, H, W order), so the state dict of
`torchvision` and `seed` has torchvision's keys, what
`alexnet_jax.convert.from_torch_state_dict` reads. `flax_params` is a second,
independent conversion for any variant (the paper's included).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

# conv: (out channels, kernel, stride, padding, groups, LRN after, max-pool after)
LAYOUTS = {
    "paper": dict(  # Krizhevsky et al. 2012: two towers (groups=2), LRN, dropout after fc6/fc7
        convs=[(96, 11, 4, 2, 1, True, True), (256, 5, 1, 2, 2, True, True),
               (384, 3, 1, 1, 1, False, False), (384, 3, 1, 1, 2, False, False),
               (256, 3, 1, 1, 2, False, True)],
        hidden=(4096, 4096), avgpool=None, dropout_before_hidden=False, size=224,
        names=["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]),
    "torchvision": dict(  # torchvision.models.alexnet
        convs=[(64, 11, 4, 2, 1, False, True), (192, 5, 1, 2, 1, False, True),
               (384, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, False),
               (256, 3, 1, 1, 1, False, True)],
        hidden=(4096, 4096), avgpool=(6, 6), dropout_before_hidden=True, size=224,
        names=["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]),
    "seed": dict(  # the seed project's half-width net: no average pool
        convs=[(48, 11, 4, 2, 1, False, True), (128, 5, 1, 2, 1, False, True),
               (192, 3, 1, 1, 1, False, False), (192, 3, 1, 1, 1, False, False),
               (128, 3, 1, 1, 1, False, True)],
        hidden=(2048, 2048), avgpool=None, dropout_before_hidden=True, size=224,
        names=["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]),
    "small": dict(  # cuda-convnet-style 32x32 net
        convs=[(64, 5, 1, 2, 1, True, True), (64, 5, 1, 2, 1, True, True)],
        hidden=(384, 192), avgpool=None, dropout_before_hidden=False, size=32,
        names=["conv1", "conv2", "fc3", "fc4", "fc5"]),
}
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
                "selu": nn.SELU}


class AlexNet(nn.Module):
  """torchvision.models.AlexNet's layout: features -> avgpool -> flatten -> classifier."""

  def __init__(self, features, avgpool, classifier):
    super().__init__()
    self.features = nn.Sequential(*features)
    self.avgpool = avgpool
    self.classifier = nn.Sequential(*classifier)

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build(variant: str, num_classes: int = 1000, *, lrn: bool = True, activation="relu",
          dropout_rate=0.5) -> AlexNet:
  """The variant with PyTorch's default initialisation (seed it with torch.manual_seed)."""
  layout = LAYOUTS[variant]
  act = _ACTIVATIONS[activation]
  features, channels, size = [], 3, layout["size"]
  for out, kernel, stride, padding, groups, with_lrn, pool in layout["convs"]:
    features += [nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, groups=groups),
                 act()]
    size = (size + 2 * padding - kernel) // stride + 1
    if with_lrn and lrn:
      features.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
    if pool:
      features.append(nn.MaxPool2d(3, 2))
      size = (size - 3) // 2 + 1
    channels = out
  avgpool = nn.AdaptiveAvgPool2d(layout["avgpool"]) if layout["avgpool"] else nn.Identity()
  size = layout["avgpool"][0] if layout["avgpool"] else size
  classifier, width = [], channels * size * size
  for hidden in layout["hidden"]:
    if dropout_rate and layout["dropout_before_hidden"]:
      classifier.append(nn.Dropout(dropout_rate))
    classifier += [nn.Linear(width, hidden), act()]
    if dropout_rate and not layout["dropout_before_hidden"]:
      classifier.append(nn.Dropout(dropout_rate))
    width = hidden
  classifier.append(nn.Linear(width, num_classes))
  return AlexNet(features, avgpool, classifier)


def flax_params(model: AlexNet, variant: str, *, grads: bool = False) -> dict:
  """The model's weights (or their .grad) as Flax params named conv1.., fc6.. (numpy).

  Conv kernels OIHW -> HWIO; linear weights transposed; the first linear
  layer's input rows permuted from PyTorch's (C, H, W) flatten to NHWC's (H, W, C).
  """
  layers = [m for m in list(model.features) + list(model.classifier)
            if isinstance(m, (nn.Conv2d, nn.Linear))]
  names = LAYOUTS[variant]["names"]
  channels = LAYOUTS[variant]["convs"][-1][0]
  out, first_linear = {}, True
  for name, layer in zip(names, layers):
    weight, bias = (layer.weight.grad, layer.bias.grad) if grads else (layer.weight, layer.bias)
    weight, bias = weight.detach().numpy(), bias.detach().numpy()
    if isinstance(layer, nn.Conv2d):
      kernel = weight.transpose(2, 3, 1, 0)
    elif first_linear:
      side = int(round(np.sqrt(weight.shape[1] // channels)))
      kernel = (weight.reshape(weight.shape[0], channels, side, side)
                .transpose(2, 3, 1, 0).reshape(weight.shape[1], weight.shape[0]))
      first_linear = False
    else:
      kernel = weight.T
    out[name] = {"kernel": np.ascontiguousarray(kernel), "bias": bias}
  return out


class TrainStep:
  """torch.optim.SGD (momentum, coupled weight decay) on a fixed NCHW batch."""

  def __init__(self, config):
    torch.manual_seed(0)
    self.model = build(config.model.variant, config.num_classes).train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=config.learning_rate,
                               momentum=config.momentum, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(0)
    s = config.image_size
    self.images = torch.randn(config.batch_size, 3, s, s, generator=gen)
    self.labels = torch.randint(0, config.num_classes, (config.batch_size,), generator=gen)

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      loss = nn.functional.cross_entropy(self.model(self.images), self.labels)
      loss.backward()
      self.opt.step()
      loss.item()
    return (time.perf_counter() - start) / steps


class EvalStep:
  def __init__(self, config):
    torch.manual_seed(0)
    self.model = build(config.model.variant, config.num_classes).eval()
    s = config.image_size
    self.images = torch.randn(config.batch_size, 3, s, s,
                              generator=torch.Generator().manual_seed(0))

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
      for _ in range(steps):
        self.model(self.images).argmax(-1)
    return (time.perf_counter() - start) / steps
