"""Checkpoint lookup and initialisation: resume, init_checkpoint, SSMA experts from stage 1."""

import os

import keras
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.training.run_info import read_run_info


class ModelVariables(tf.Module):
    """Every variable of a Keras model, keyed by its path. tf.train.Checkpoint follows layer
    attributes but not layers or weights kept in Python lists (MiT's blocks, the Segformer
    head's kernels), so checkpoints name each variable explicitly through this."""

    def __init__(self, model):
        super().__init__()
        by_path = {}
        for index, variable in enumerate(model.weights):
            key = variable.path if variable.path not in by_path else f"{variable.path}#{index}"
            by_path[key] = variable
        self.by_path = by_path


def trackable(items):
    """Checkpoint items plus, for each Keras model `name`, its variables as `name_variables`."""
    out = dict(items)
    for name, value in items.items():
        if isinstance(value, keras.Model):
            out[f"{name}_variables"] = ModelVariables(value)
    return out


def find_checkpoint(path, key="checkpoint"):
    """Checkpoint prefix from a folder (its latest) or a prefix; ConfigError naming `key`."""
    if path and os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        raise ConfigError(f"key '{key}': no checkpoint in folder {path}")
    if path and os.path.isfile(path + ".index"):
        return path
    raise ConfigError(f"key '{key}': no checkpoint at {path}")


def checkpoint_folder(prefix):
    return os.path.dirname(os.path.abspath(prefix))


def restore_weights(model, prefix, key):
    """Restore `model` saved as `model` in a training checkpoint; ConfigError on mismatch."""
    status = tf.train.Checkpoint(**trackable({"model": model})).restore(prefix).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise ConfigError(f"key '{key}': checkpoint {prefix} does not match the model "
                          f"({str(exc).splitlines()[0][:200]})") from None


def init_from_checkpoint(model, path, key="init_checkpoint"):
    """Initialise every weight of `model` from the model of another run's checkpoint."""
    prefix = find_checkpoint(path, key)
    try:
        restore_weights(model, prefix, key)
    except (tf.errors.OpError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"key '{key}': checkpoint {prefix} does not match the model "
                          f"({str(exc).splitlines()[0][:200]})") from None


def expert_config(config, modality):
    """The stage-1 config of `config`'s expert for `modality`: the expert model with the
    fusion config's keys that it reads (a checkpoint without run_info.json)."""
    from ssma_tf.config import config_from_saved

    values = {**config.explicit(), "model": config.expert, "modalities": [modality]}
    for key in ("framework", "expert", "type"):
        values.pop(key, None)
    return config_from_saved(values, config.source)


def expert_sources(config):
    """[(modality, prefix, stage-1 config)] for SSMA's experts from checkpoint1, checkpoint2...
    The stage-1 config comes from the checkpoint's run_info.json when there is one (else this
    config's options); checked before any model is built."""
    from ssma_tf.config import config_from_saved

    sources = []
    for index, modality in enumerate(config.modalities):
        key = f"checkpoint{index + 1}"
        path = getattr(config, key, None)
        if not path:
            raise ConfigError(f"{config.source}: key '{key}' is required to initialise expert "
                              f"'{modality}' (stage fusion); give the stage-1 checkpoint")
        prefix = find_checkpoint(path, key)
        info = read_run_info(checkpoint_folder(prefix))
        if info:
            stage1 = config_from_saved(info["config"], prefix)
        else:
            stage1 = expert_config(config, modality)
        if stage1.model != config.expert or stage1.modalities != [modality]:
            raise ConfigError(f"key '{key}': {prefix} is a {stage1.model} model of "
                              f"{stage1.modalities}, expected the {config.expert} expert of "
                              f"['{modality}']")
        sources.append((key, modality, prefix, stage1))
    return sources


def init_experts(model, config):
    """Copy the stage-1 models' "encoder" into SSMA's `expert_<modality>` encoders."""
    from ssma_tf.models.factory import build_model

    for key, modality, prefix, stage1 in expert_sources(config):
        expert = model.get_layer(f"expert_{modality}")
        channels = int(expert.inputs[0].shape[-1])
        source = build_model(stage1, channels={modality: channels})
        restore_weights(source, prefix, key)
        try:
            expert.set_weights(source.get_layer("encoder").get_weights())
        except ValueError as exc:
            raise ConfigError(f"key '{key}': encoder in {prefix} does not fit expert "
                              f"'{modality}' ({str(exc).splitlines()[0][:200]})") from None
