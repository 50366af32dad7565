"""Trains AlexNet: `python main.py --config=configs/NAME.py[:ARG] --workdir=DIR`.

Flags, distributed start-up and one call into `alexnet_jax.train`; nothing else.
Rerunning the same command on the same workdir resumes from the newest checkpoint.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and config.json go.")
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0, to start a multi-process job with jax.distributed.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process job.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process job.")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                     "A multi-process job fails (rather than hangs) this long after a process dies.")
flags.DEFINE_integer("initialization_timeout", 300,
                     "Seconds to wait for every process to join a multi-process job.")
flags.DEFINE_bool("auto_distributed", False,
                  "Let jax.distributed detect the cluster (TPU pods, SLURM) on its own.")
config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from alexnet_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.initialize(coordinator_address=FLAGS.coordinator_address,
                     num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                     auto=FLAGS.auto_distributed,
                     heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds,
                     initialization_timeout=FLAGS.initialization_timeout)
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  final = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("Done at step %s: %s", final.get("step"),
               {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})


if __name__ == "__main__":
  app.run(main)
