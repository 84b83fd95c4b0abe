"""Train a model from a config file: python train.py -c configs/demo_adapnet_rgb_train.config

Re-running the same command resumes from the latest checkpoint in the config's
`checkpoint` folder. `--override key=value` (repeatable) changes one key (YAML value).
"""

from absl import app, flags

flags.DEFINE_string("config", None, "SSMA-style .config file (flat key: value YAML)",
                    short_name="c")
flags.DEFINE_multi_string("override", [], "key=value overriding the config (repeatable)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from ssma_tf.config import apply_gpu_id, load_config
    from ssma_tf.errors import InputError, print_cli_error

    if not FLAGS.config:
        return print_cli_error("--config is required")
    try:
        config = load_config(FLAGS.config, FLAGS.override)
        apply_gpu_id(config)
        from ssma_tf.training.trainer import NonFiniteLossError, train
        try:
            folder = train(config)
        except NonFiniteLossError as exc:
            return print_cli_error(exc, status=1)
    except InputError as exc:
        return print_cli_error(exc)
    print(f"checkpoints in {folder}")
    return 0


if __name__ == "__main__":
    app.run(main)
