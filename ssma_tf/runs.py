"""A trained run as the evaluate / export / predict CLIs need it: config, restored model,
modality specs, class names and palette.

The top library layer: it may use training's checkpoint code, and nothing below imports it.
"""

import dataclasses

from ssma_tf.config import load_config
from ssma_tf.data import schema
from ssma_tf.data.pipeline import select_modalities
from ssma_tf.errors import ConfigError
from ssma_tf.evaluation.evaluator import select_output
from ssma_tf.training import checkpoints, compatibility
from ssma_tf.visualization import dataset_labels


@dataclasses.dataclass
class Run:
    config: object
    model: object
    checkpoint: str          # the restored checkpoint prefix
    specs: dict              # {modality: ModalitySpec}, in config.modalities order
    class_names: list
    palette: object          # uint8 [>= num_classes, 3]
    run_info: dict | None


def eval_records(config):
    """test_data, else val_data; ConfigError naming both keys if neither is set."""
    records = config.test_data or config.val_data
    if not records:
        raise ConfigError(f"{config.source}: set key 'test_data' (or 'val_data') to evaluate")
    return records


def modality_specs(config, run_info):
    """Specs from the checkpoint's run_info.json, else from the config's records' sidecar."""
    stored = (run_info or {}).get("modalities") or {}
    if all(name in stored for name in config.modalities):
        return {name: schema.ModalitySpec.from_json(stored[name]) for name in config.modalities}
    records = config.test_data or config.val_data or config.train_data
    if not records:
        raise ConfigError(f"{config.source}: no modality specs in the checkpoint's run_info.json "
                          "and no 'test_data', 'val_data' or 'train_data' to read them from")
    _, info = schema.resolve_records(records)
    return select_modalities(records, info, config.modalities)


def load_eval_config(config_path, overrides=()):
    """The config, checked for what evaluation needs (num_classes)."""
    config = load_config(config_path, overrides)
    if not config.num_classes:
        raise ConfigError(f"{config_path}: key 'num_classes' is required")
    return config


def load_run(config, checkpoint=None):
    """Restores the eval model of `config` alone (checkpoints.restore_eval_model) from
    `checkpoint` (default config.checkpoint), answering with its `eval_output`."""
    prefix = checkpoints.find_checkpoint(checkpoint or config.checkpoint)
    config = compatibility.aligned(config, prefix)
    run_info = checkpoints.read_run_info(checkpoints.checkpoint_folder(prefix))
    model = select_output(checkpoints.restore_eval_model(config, prefix), config)
    names, palette = dataset_labels(config.dataset, config.num_classes)
    return Run(config, model, prefix, modality_specs(config, run_info), names, palette, run_info)
