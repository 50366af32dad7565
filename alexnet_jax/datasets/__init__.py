"""TFDS builders that ship with the project (importing registers them with TFDS)."""

from alexnet_jax.datasets import sklearn_digits  # noqa: F401  (registers the builder)
