"""Checkpoint lookup, initialisation (resume, init_checkpoint, SSMA experts from stage 1) and
restoring a trained run's eval model alone (`restore_eval_model`)."""

import contextlib
import os

import keras
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import get_framework
from ssma_tf.models import factory
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


@contextlib.contextmanager
def float32_policy():
    """Build under Keras's float32 dtype policy, then restore the global policy as it was
    (Keras 3 has no policy scope; a trained run's variables are float32 either way)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def saved_models(prefix):
    """Names of the Keras model items saved in checkpoint `prefix` (e.g. model, teacher)."""
    suffix = "_variables"
    names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}
    return sorted(name[:-len(suffix)] for name in names if name.endswith(suffix))


def restore_eval_model(config, checkpoint=None, build_model=None):
    """config.framework's eval model, alone: the checkpoint item its class names as
    `eval_item` ("model"; mean teacher / M3L: the EMA "teacher"), built in float32 by
    `build_model(config, channels)` (default: ssma_tf.models.factory.build_model) and
    wrapped by the framework's `eval_parts` (which may restore more items), with the
    channels the run recorded in run_info.json, its weights restored from `checkpoint` (a
    folder or prefix; default config.checkpoint's latest). No framework, second network or
    optimizer is built. ConfigError naming key 'checkpoint' when the checkpoint holds no such
    item or its variables do not fit the model built from the config."""
    prefix = find_checkpoint(checkpoint or config.checkpoint)
    framework = get_framework(config.framework)
    saved = saved_models(prefix)
    info = read_run_info(checkpoint_folder(prefix))
    channels = {}
    if info and info.get("modalities"):
        channels = {n: s["channels"] for n, s in info["modalities"].items()}
    with float32_policy():
        model, items = framework.eval_parts(
            config, (build_model or factory.build_model)(config, channels))
    for item in items:
        if item not in saved:
            raise ConfigError(f"key 'checkpoint': {prefix} holds no '{item}' model (the eval "
                              f"model of framework {config.framework} in {config.source}); it"
                              f" holds {', '.join(saved) or 'no models'}")
    try:
        status = tf.train.Checkpoint(**trackable(items)).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise ConfigError(f"key 'checkpoint': {prefix} does not match the {config.model} / "
                          f"{config.framework} built from {config.source} "
                          f"({str(exc).splitlines()[0][:200]})") from None
    return model
