"""Bytes each device sends per training step: data parallelism vs the paper's towers.

Computed from shapes, not timed. The tower figures come from tracing the real
tower program (alexnet_jax/models/towers.py) and summing the operands of its
`all_gather`s, so they follow the code. Ring collectives: an all-reduce of S
bytes over n devices sends 2(n-1)/n·S per device; an all-gather (and its
backward, a reduce-scatter) sends (n-1)·s for a local slice of s bytes.

  python benchmarks/communication.py [--batch 128] [--devices 2 8 64]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from alexnet_jax import models, parallel  # noqa: E402
from alexnet_jax.models import towers  # noqa: E402

BYTES = 4  # float32 gradients and activations


def gathered_floats_per_example(num_classes=1000, image_size=224):
  """Floats one tower contributes to all_gathers in one forward pass, per example."""
  model = models.create_model("paper", num_classes=num_classes)
  net = towers.create_tower_model(model, 2)
  mesh = parallel.create_mesh(jax.devices()[:2], model_parallel=2)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
      (1, image_size, image_size, 3)))["params"])
  specs = towers.partition_specs(params)
  params = jax.tree.map(
      lambda a, sp: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                         sharding=jax.sharding.NamedSharding(mesh, sp)),
      params, specs, is_leaf=lambda x: isinstance(x, P))
  image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32,
                               sharding=jax.sharding.NamedSharding(mesh, P()))
  fn = jax.shard_map(lambda p, x: net.apply({"params": p}, x), mesh=mesh,
                     in_specs=(specs, P()), out_specs=P(), check_vma=False)
  jaxpr = jax.make_jaxpr(fn)(params, image)
  total = 0

  def walk(jp):
    nonlocal total
    for eqn in jp.eqns:
      if eqn.primitive.name == "all_gather":
        total += eqn.invars[0].aval.size
      for param in eqn.params.values():
        if hasattr(param, "jaxpr"):
          walk(param.jaxpr if hasattr(param.jaxpr, "eqns") else param.jaxpr.jaxpr)
        elif hasattr(param, "eqns"):
          walk(param)

  walk(jaxpr.jaxpr)
  return total, models.count_params(params)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=128, help="global batch")
  parser.add_argument("--devices", type=int, nargs="+", default=[2, 8, 64])
  args = parser.parse_args()
  act, n_params = gathered_floats_per_example()
  print(f"paper AlexNet: {n_params:,} parameters; one tower sends {act:,} floats "
        f"({act * BYTES / 1e3:.0f} kB) per example forward, the same again backward.\n")
  print("| devices | global batch | data parallel: MB sent/device/step | "
        "towers (data×2): MB sent/device/step | of which activations |")
  print("|---:|---:|---:|---:|---:|")
  for n in args.devices:
    dp = 2 * (n - 1) / n * n_params * BYTES
    d = n // 2
    per_replica_batch = args.batch // d
    grads = 2 * (d - 1) / d * (n_params / 2) * BYTES if d > 1 else 0.0
    acts = 2 * act * per_replica_batch * BYTES  # forward gather + backward reduce-scatter
    print(f"| {n} | {args.batch} | {dp / 1e6:.1f} | {(grads + acts) / 1e6:.1f} | "
          f"{acts / 1e6:.1f} |")
  crossover = n_params * BYTES / (2 * act * BYTES)
  print(f"\nWith 2 devices, towers send less than data parallelism while the batch per "
        f"tower pair is below ~{crossover:.0f} examples (activations then outweigh "
        "gradients).")


if __name__ == "__main__":
  main()
