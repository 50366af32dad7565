"""TFDS builders that ship with the project (importing registers them with TFDS)."""
