"""A model cut at its encoder features, for frameworks that alter the features between
encoder and decoder (UniMatch's feature perturbation).

`feature_split(model, name)` returns a `FeatureSplit` whose `encode(inputs)` gives the list of
feature tensors and whose `decode(features, inputs)` the model's output dict from them; both
run the model's own layers (sub-graphs of the functional model: no copies, no new weights),
so `decode(encode(x), x)` equals `model(x)`. The cut:
- a model holding `encoder_head_prefixes` (DeepLab-v3+: the ASPP and the low-level
  projection live in its "encoder"): at the backbone features those head layers read
  (ResNet P2 and P5: UniMatch's c1 and c4);
- otherwise at the outputs of the nested encoders: the layer "encoder" (AdapNet++,
  DeepLab-v2, Segformer, LinearFusion, TokenFusion) or the layers "expert_<modality>"
  (SSMA: every expert's features, before fusion).
A model with none of these raises a ConfigError naming it.
"""

import keras

from ssma_tf.errors import ConfigError


def encoder_layers(model):
    """The top-level layers named "encoder" or "expert_*"."""
    return [layer for layer in model.layers
            if layer.name == "encoder" or layer.name.startswith("expert_")]


def _producer(tensor):
    return tensor._keras_history.operation


def backbone_features(encoder, prefixes):
    """The tensors of `encoder`'s graph that its head reads from the rest, each once, in
    graph order. The head: the layers named with one of `prefixes` and every layer after
    them (their activations); a weightless one-input layer between a feature and the head
    (DeepLab's image pooling) belongs to the head too."""
    head, features = set(), []
    for layer in encoder.layers:        # in graph order
        inputs = [t for node in layer._inbound_nodes for t in node.input_tensors]
        if layer.name.startswith(prefixes) or any(id(_producer(t)) in head for t in inputs):
            head.add(id(layer))
            features += [t for t in inputs if id(_producer(t)) not in head]
    ids = {id(t) for t in features}

    def feeds_through(tensor):
        operation = _producer(tensor)
        inputs = operation._inbound_nodes[0].input_tensors
        return not operation.weights and len(inputs) == 1 and id(inputs[0]) in ids

    unique = {}
    for tensor in features:
        if not feeds_through(tensor):
            unique.setdefault(id(tensor), tensor)
    return list(unique.values())


class FeatureSplit:
    """`encode(inputs, training)` -> [features]; `decode(features, inputs, training)` -> the
    output dict. `inputs` is the model's input dict."""

    def __init__(self, encode, decode):
        self._encode, self._decode = encode, decode

    def encode(self, inputs, training=False):
        return self._encode(inputs, training)

    def decode(self, features, inputs, training=False):
        return self._decode(features, inputs, training)


def node_outputs(layer):
    """The flat output tensors of `layer`'s (only) call in its model's graph (a nested
    model's `.output` is its own graph's, not its call's)."""
    if len(layer._inbound_nodes) != 1:
        raise ConfigError(f"layer {layer.name!r} is called {len(layer._inbound_nodes)} times;"
                          " a feature split needs one call")
    return list(layer._inbound_nodes[0].output_tensors)


def _decoder(model, cuts):
    """decode(features, inputs, training) through keras.Model([*model inputs, *cuts]) -> the
    model's outputs."""
    names = list(model.input)
    decoder = keras.Model([model.input[n] for n in names] + list(cuts), model.output,
                          name=f"{model.name}_decoder")

    def decode(features, batch, training):
        return decoder([batch[n] for n in names] + list(features), training=training)
    return decode


def feature_split(model, model_name):
    """The model's `FeatureSplit` (see the module docstring)."""
    encoders = encoder_layers(model)
    if not encoders:
        raise ConfigError(f"model {model_name} has no encoder/decoder split (no layer 'encoder'"
                          " or 'expert_<modality>'), which feature perturbation needs")
    prefixes = tuple(getattr(model, "encoder_head_prefixes", ()))
    if prefixes and len(encoders) == 1 and isinstance(encoders[0], keras.Model):
        encoder = encoders[0]
        inner = backbone_features(encoder, prefixes)
        backbone = keras.Model(encoder.input, inner, name=f"{encoder.name}_backbone")
        head = keras.Model(inner, encoder.output, name=f"{encoder.name}_head")
        outer = _decoder(model, node_outputs(encoder))
        (modality,) = model.input

        def encode(inputs, training):
            return list(backbone(inputs[modality], training=training))

        def decode(features, inputs, training):
            heads = keras.tree.flatten(head(list(features), training=training))
            return outer(heads, inputs, training)
        return FeatureSplit(encode, decode)
    cuts = [t for layer in encoders for t in node_outputs(layer)]
    encoder = keras.Model(model.input, cuts, name=f"{model.name}_encoder")

    def encode_all(inputs, training):
        return list(encoder(inputs, training=training))
    return FeatureSplit(encode_all, _decoder(model, cuts))
