"""`python -m alexnet_jax --config=... --workdir=...`: the training command, from anywhere."""

from alexnet_jax import cli

cli.train()
