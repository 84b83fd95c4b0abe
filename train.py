"""Train a model from a config file: python train.py -c configs/demo_adapnet_rgb_train.config

Re-running the same command resumes from the latest checkpoint in the config's
`checkpoint` folder. `--override key=value` (repeatable) changes one key (YAML value).
SIGTERM or Ctrl-C saves a checkpoint at the current step and exits with code 75 (re-run to
resume); a second Ctrl-C stops at once. `--debug` shows the traceback of an unexpected error.
"""

import sys

from absl import app, flags

from ssma_tf.cli import guarded, without_debug

flags.DEFINE_string("config", None, "SSMA-style .config file (flat key: value YAML)",
                    short_name="c")
flags.DEFINE_multi_string("override", [], "key=value overriding the config (repeatable)")
FLAGS = flags.FLAGS


@guarded
def main(argv):
    del argv
    from ssma_tf.config import apply_gpu_id, load_config
    from ssma_tf.errors import print_cli_error

    if not FLAGS.config:
        return print_cli_error("--config is required")
    config = load_config(FLAGS.config, FLAGS.override)
    apply_gpu_id(config)
    from ssma_tf.training.preemption import PREEMPTED_EXIT, Preempted
    from ssma_tf.training.trainer import NonFiniteLossError, train
    try:
        folder = train(config)
    except NonFiniteLossError as exc:
        return print_cli_error(exc, status=1)
    except Preempted as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    print(f"checkpoints in {folder}")
    return 0


if __name__ == "__main__":
    app.run(main, argv=without_debug(sys.argv))
