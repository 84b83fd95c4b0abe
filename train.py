"""Train a model from a config file: python train.py -c configs/demo_adapnet_rgb_train.config

Re-running the same command resumes from the latest checkpoint in the config's
`checkpoint` folder. `--override key=value` (repeatable) changes one key (YAML value).
"""

import sys

from absl import app, flags

flags.DEFINE_string("config", None, "SSMA-style .config file (flat key: value YAML)",
                    short_name="c")
flags.DEFINE_multi_string("override", [], "key=value overriding the config (repeatable)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from ssma_tf.config import apply_gpu_id, load_config
    from ssma_tf.errors import InputError

    if not FLAGS.config:
        print("error: --config is required", file=sys.stderr)
        return 2
    try:
        config = load_config(FLAGS.config, FLAGS.override)
        apply_gpu_id(config)
        from ssma_tf.training.trainer import NonFiniteLossError, train
        try:
            folder = train(config)
        except NonFiniteLossError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"checkpoints in {folder}")
    return 0


if __name__ == "__main__":
    app.run(main)
