"""Trains AlexNet: `python main.py --config=NAME_OR_PATH[:ARG] --workdir=DIR [--config.KEY=VALUE ...]`.

Rerunning the same command on the same workdir resumes from the newest
checkpoint. `--help` lists the shipped configs and every config key. The
flags, the checks and the distributed start-up live in `alexnet_jax.cli`
(installed as the `alexnet-train` command too).
"""

from alexnet_jax import cli

if __name__ == "__main__":
  cli.train()
