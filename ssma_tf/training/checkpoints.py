"""Checkpoint lookup, initialisation (resume, init_checkpoint, SSMA experts from stage 1) and
restoring a trained run's eval model alone (`restore_eval_model`)."""

import contextlib
import os

import keras
import tensorflow as tf

from ssma_tf.data import schema
from ssma_tf.data.pipeline import select_modalities
from ssma_tf.errors import ConfigError, InputError
from ssma_tf.frameworks import get_framework
from ssma_tf.models import factory
from ssma_tf.training import compatibility
from ssma_tf.training.run_info import read_run_info
from ssma_tf.weights import importers, readers
from ssma_tf.weights.assign import variables_by_path

WEIGHT_KEYS = ("init_checkpoint", "checkpoint1", "checkpoint2")


class ModelVariables(tf.Module):
    """Every variable of a Keras model, keyed by its path. tf.train.Checkpoint follows layer
    attributes but not layers or weights kept in Python lists (MiT's blocks, the Segformer
    head's kernels), so checkpoints name each variable explicitly through this."""

    def __init__(self, model):
        super().__init__()
        self.by_path = variables_by_path(model)


def trackable(items):
    """Checkpoint items plus, for each Keras model `name`, its variables as `name_variables`."""
    out = dict(items)
    for name, value in items.items():
        if isinstance(value, keras.Model):
            out[f"{name}_variables"] = ModelVariables(value)
    return out


def find_checkpoint(path, key="checkpoint"):
    """Checkpoint prefix from a folder (its latest) or a prefix; ConfigError naming `key`.
    The keys that only initialise weights (WEIGHT_KEYS) also accept any file or folder the
    weights package reads (TF1 checkpoints, torch, safetensors, Keras .h5): its path."""
    if path and os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        if key not in WEIGHT_KEYS:
            raise ConfigError(f"key '{key}': no checkpoint in folder {path}")
    if path and os.path.isfile(path + ".index"):
        return path
    if path and key in WEIGHT_KEYS and os.path.exists(path):
        try:
            readers.detect_format(path)
        except InputError as exc:
            raise ConfigError(f"key '{key}': {exc}") from None
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


def config_specs(config):
    """{modality: ModalitySpec} from config's train_data (else val_data, test_data) sidecar,
    or {} without records."""
    records = config.train_data or config.val_data or config.test_data
    if not records:
        return {}
    _, info = schema.resolve_records(records)
    return select_modalities(records, info, config.modalities)


def import_foreign(model, path, config, key=None, *, new_head=True, verbose=True,
                   options=None):
    """Map the weight file `path` (not a checkpoint of ours) onto `model`, built from `config`,
    through the importer that fits it (ssma_tf.weights); prints the report when `verbose`;
    returns (importer name, Report). ConfigError naming `key` (or, without one, the file)
    when nothing fits or a tensor does not; with `new_head`, a class-count mismatch
    re-initialises the head instead."""
    where = f"key '{key}'" if key else path
    options = {"specs": config_specs(config), **(options or {})}
    try:
        source = readers.read_source(path)
        name, report = importers.import_weights(model, source, config, options,
                                                new_head=new_head, where=where)
    except InputError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") \
            from None
    if verbose:
        print(f"{key or 'weights'}: {path} ({source.format}, importer {name})")
        for line in report.lines():
            print(f"  {line}")
    return name, report


def init_from_checkpoint(model, path, key="init_checkpoint", config=None, verbose=True):
    """Initialise `model` from the model of another run's checkpoint, or from any weight file
    the weights package reads (that needs `config`, the config `model` was built from; the
    import report is printed when `verbose`)."""
    prefix = find_checkpoint(path, key)
    if readers.detect_format(prefix)[0] != "ssma_tf":
        if config is None:
            raise ConfigError(f"key '{key}': {prefix} is not a checkpoint of this toolkit; "
                              "importing it needs the run's config")
        import_foreign(model, prefix, config, key, verbose=verbose)
        return
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
        if readers.detect_format(prefix)[0] == "ssma_tf":
            restore_weights(source, prefix, key)
        else:
            import_foreign(source, prefix, stage1, key)
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
    for item, part in items.items():
        if item not in saved:
            raise ConfigError(f"key 'checkpoint': {prefix} holds no '{item}' model (the eval "
                              f"model of framework {config.framework} in {config.source}); it"
                              f" holds {', '.join(saved) or 'no models'}")
        compatibility.check_shapes(part, prefix, item, config)
    try:
        status = tf.train.Checkpoint(**trackable(items)).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise ConfigError(f"key 'checkpoint': {prefix} does not match the {config.model} / "
                          f"{config.framework} built from {config.source} "
                          f"({str(exc).splitlines()[0][:200]})") from None
    return model
