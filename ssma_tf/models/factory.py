"""build_model(config, channels): the registered builder of `config.model`, called with the
keys that model declares (ssma_tf/registry.py).

A model's keys become builder keywords (`Key.arg`, else the key's name). A key that names a
sub-component (`Key.component`: a backbone, or SSMA's expert model) is passed as a
`Component`: the chosen entry with its own keys' values, built the same way.
"""

import dataclasses
import math

import keras

from ssma_tf import registry
from ssma_tf.errors import ConfigError

DEFAULT_CHANNELS = {"depth": 1}     # raw depth; every other modality is 3-channel


def default_channels(modalities):
    """{modality: channels} when no records are at hand (raw depth 1, else 3)."""
    return {m: DEFAULT_CHANNELS.get(m, 3) for m in modalities}


@dataclasses.dataclass(frozen=True)
class Component:
    """A chosen sub-component: its registry entry and the keyword options from its keys."""

    entry: registry.Entry
    options: dict

    def build(self, *args, **kwargs):
        """Call the component's builder with its options (explicit keywords win)."""
        return self.entry.obj(*args, **{**self.options, **kwargs})


def component_options(entry, config, core_args=None):
    """Builder keywords of `entry` from `config`: its keys (sub-components as Components;
    not its `recipe_keys`, read by the trainer) and its `core_args` ({builder keyword: run
    key}, e.g. MiT's xla_friendly <- xla)."""
    options = {}
    for key, spec in entry.keys.items():
        if key in entry.info.get("recipe_keys", ()):
            continue
        value = getattr(config, key)
        if spec.component:
            sub = registry.REGISTRIES[spec.component].get(value)
            value = Component(sub, component_options(sub, config))
        options[spec.arg or key] = value
    for arg, key in entry.info.get("core_args", {}).items():
        options[arg] = getattr(config, key)
    return options


def crop_multiple(config):
    """What the crop's height and width must divide by: the least common multiple of the
    `crop_multiple` of the model and of the models and backbones it is built from."""
    multiple, pending = 1, [model_entry(config)]
    while pending:
        entry = pending.pop()
        multiple = math.lcm(multiple, entry.info.get("crop_multiple", 1))
        for key, spec in entry.keys.items():
            if spec.component:
                pending.append(registry.REGISTRIES[spec.component].get(getattr(config, key)))
    return multiple


def model_entry(config):
    """The registry entry of `config.model`."""
    return registry.MODELS.get(config.model, f"{config.source}: key 'model'")


# what a builder sets on its model beside the layers (a wrapping keras.Model must carry them)
MODEL_ATTRIBUTES = ("output_loss_weights", "output_penalty_weights", "output_loss_kinds",
                    "encoder_head_prefixes")


def build_model(config, channels=None, features=()):
    """The keras.Model named by config.model; `channels` = {modality: C} (default per name).
    A multimodal builder gets `(num_classes, {modality: C}, **options)`, a unimodal one
    `(num_classes, modality, C, **options)`.
    `features`: names to add as extra outputs "feature_<name>" (e.g. a decoder feature for a
    representation head): from the model's `features` ({name: layer}, the layer's output),
    or its `built_features` (names its builder outputs itself when given `features=`)."""
    if config.num_classes is None:
        raise ConfigError(f"{config.source}: key 'num_classes' is required")
    entry = model_entry(config)
    channels = {**default_channels(config.modalities), **(channels or {})}
    modalities = {m: channels[m] for m in config.modalities}
    if not entry.multimodal and len(modalities) != 1:
        raise ConfigError(f"{config.source}: key 'modalities': model {entry.name} takes one "
                          f"modality, got {config.modalities}")
    inputs = (modalities,) if entry.multimodal else next(iter(modalities.items()))
    options = component_options(entry, config)
    own = entry.info.get("built_features", ())
    built = tuple(n for n in features if n in own)
    if built:
        options["features"] = built
    model = entry.obj(config.num_classes, *inputs, **options)
    features = [n for n in features if n not in built]
    if not features:
        return model
    source = entry.info.get("features_from")     # SSMA: its expert model's feature layers
    layers = (registry.MODELS.get(getattr(config, source)) if source else entry).info.get(
        "features", {})
    return with_features(model, entry.name, layers, features, known=own)


def with_features(model, model_name, layers, names, known=()):
    """`model` whose outputs also hold "feature_<name>" for each of `names`: the output of
    the layer `layers` ({feature name: layer name}) names; loss and penalty weights, loss kinds
    and encoder head prefixes (the optimizer groups) are kept. `known`: the features the
    model has beside `layers` (for the error message)."""
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ConfigError(f"model {model_name} has no feature {unknown[0]!r} (it has "
                          f"{', '.join(sorted({*layers, *known})) or 'none'})")
    outputs = dict(model.output)
    for name in names:
        outputs[f"feature_{name}"] = model.get_layer(layers[name]).output
    wrapped = keras.Model(model.input, outputs, name=model.name)
    for attribute in MODEL_ATTRIBUTES:
        if hasattr(model, attribute):
            setattr(wrapped, attribute, getattr(model, attribute))
    return wrapped
