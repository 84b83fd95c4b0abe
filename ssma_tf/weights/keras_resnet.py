"""Keras applications' ResNet50 / ResNet101 (v1) and ResNet50V2 / ResNet101V2 weight files
-> the DeepLab models' ResNet v1 / v2 backbones.

The files (`resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5`, ...) are legacy
HDF5: one group per layer, datasets `<layer>/<layer>/<variable>` (Keras-2 files add
":0"); also read inside a full-model file (`model_weights/...`). Kernels are already HWIO.
Layer names -> ours: `conv1_conv` -> `conv1`, `conv1_bn` -> `bn1`,
`conv{k}_block{b}_{i}_conv/_bn` -> `layer{k-1}_{b-1}_conv{i}/_bn{i}` (i = 1..3),
`_0_conv/_0_bn` -> `_downsample_conv/_downsample_bn`; `predictions` is dropped.

Exact folds (inference; in training the batch mean cancels a constant anyway):
- every Keras conv has a bias and is followed by a BN: the bias goes into that BN's
  moving mean (mean - bias), as our convs have none;
- Keras' BN epsilon is 1.001e-5, ours 1e-5: gamma is scaled by
  sqrt((var + 1e-5) / (var + 1.001e-5)).
These ResNets are Caffe-style v1 (stride on the first 1x1 conv: `stride_in_1x1: true`)
and expect Caffe input (BGR 0..255 minus the ImageNet mean, no std), which the model's
input (the pipeline's normalised RGB) is not; the import does not fold that in.

ResNet50V2 / ResNet101V2 files (`keras_resnet_v2`) import into the backbones `resnet50v2` /
`resnet101v2` (models/resnet_v2.py), whose layer names and BN epsilon are the files' own: each
tensor is copied as is (no fold). They expect input scaled to [-1, 1] (`mode="tf"`).
A v1 file into a v2 backbone, or a v2 file into a v1 one, is an error naming the backbone.
"""

import re

import numpy as np

from ssma_tf.models.resnet_v1 import BN_EPSILON
from ssma_tf.weights import torch_layout
from ssma_tf.weights.assign import Mapping, variables_by_path
from ssma_tf.weights.importers import register_importer
from ssma_tf.weights.resnet import MODELS, check_structure, trained_with_notes

KERAS_BN_EPSILON = 1.001e-5
ANCHOR = "conv1_conv/conv1_conv/kernel"
BLOCK_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")
V2_LAYER = re.compile(r"(conv1_conv|post_bn|conv\d_block\d+_(preact_bn|\d_conv|\d_bn))$")
V1_BLOCK = re.compile(r"layer(\d)_(\d+)_")
V2_BLOCK = re.compile(r"conv(\d)_block(\d+)_")
V2_BACKBONES = {(3, 4, 6, 3): "resnet50v2", (3, 4, 23, 3): "resnet101v2"}
V2_ANCHOR = "post_bn/gamma"    # a variable only the v2 backbone has
TRAINED_WITH = {"stride_in_1x1": True, "deep_stem": False, "pool_ceil": False}


def _split(source, our_layer):
    """{our layer name (`our_layer(file layer)`, None = drop): {variable: source dataset
    name}} and the names dropped (the classifier `predictions`)."""
    prefix = torch_layout.find_prefix(source.tensors, (ANCHOR, ANCHOR + ":0"))
    layers, dropped = {}, []
    for name in source.names(prefix):
        parts = name[len(prefix):].split("/")
        layer, variable = parts[0], parts[-1].split(":")[0]
        ours = our_layer(layer)
        if ours is None:
            dropped.append(name)
        else:
            layers.setdefault(ours, {})[variable] = name
    return layers, dropped


def _our_layer(layer):
    if layer in ("conv1_conv", "conv1_bn"):
        return "conv1" if layer == "conv1_conv" else "bn1"
    match = BLOCK_LAYER.match(layer)
    if not match:
        return None
    stage, block, index, kind = match.groups()
    base = f"layer{int(stage) - 1}_{int(block) - 1}"
    if index == "0":
        return f"{base}_downsample_{kind}"
    return f"{base}_{kind}{index}"


def _v2_layer(layer):
    return layer if V2_LAYER.match(layer) else None


def _is_keras_resnet(source):
    return torch_layout.find_prefix(source.tensors, (ANCHOR, ANCHOR + ":0")) is not None


def _fits_v1(source):
    names = source.tensors
    return (_is_keras_resnet(source) and any("conv1_bn/" in n for n in names)
            and not any("_preact_bn/" in n for n in names))


def _fits_v2(source):
    return _is_keras_resnet(source) and any("_preact_bn/" in n for n in source.tensors)


def map_keras_resnet(source, model, config, options):
    layers, dropped = _split(source, _our_layer)
    variables = variables_by_path(model)
    leaves = torch_layout.paths_by_leaf(variables)
    torch_layout.require(
        V2_ANCHOR not in leaves,
        f"{source.path}: a Keras applications ResNet (v1, post-activation) file; the model's "
        f"backbone is a ResNet v2 (set backbone: resnet50 or resnet101)")
    check_structure(_block_counts(layers, V1_BLOCK, 1, 0), False, leaves, source.path)
    mapping = Mapping()
    mapping.notes.extend(trained_with_notes(TRAINED_WITH, config))
    mapping.notes.append("Keras ResNet weights expect Caffe input (BGR 0..255 minus the "
                         "ImageNet mean); the model gets the pipeline's normalised RGB")
    for layer, names in sorted(layers.items()):
        if "kernel" in names:
            path = leaves.get(f"{layer}/kernel", f"{layer}/kernel")
            kernel = source.tensors[names["kernel"]]
            if layer == "conv1":
                torch_layout.first_layer(mapping, path, kernel, variables, names["kernel"])
            else:
                mapping.put(path, kernel, names["kernel"])
            continue
        conv = _conv_of(layer)
        bias_name = layers.get(conv, {}).get("bias")
        bias = source.tensors[bias_name] if bias_name else 0.0
        var = source.tensors[names["moving_variance"]]
        scale = np.sqrt((var + BN_EPSILON) / (var + KERAS_BN_EPSILON))
        put = lambda v, value, *n: mapping.put(leaves.get(f"{layer}/{v}", f"{layer}/{v}"),  # noqa: E731
                                               value, *n)
        put("gamma", source.tensors[names["gamma"]] * scale, names["gamma"],
            names["moving_variance"])
        put("beta", source.tensors[names["beta"]], names["beta"])
        put("moving_mean", source.tensors[names["moving_mean"]] - bias, names["moving_mean"],
            *([bias_name] if bias_name else []))
        put("moving_variance", var, names["moving_variance"])
    torch_layout.drop(mapping, dropped, "the ImageNet classifier `predictions` is not imported")
    mapping.notes.append("conv biases folded into the next BN's moving mean; BN epsilon "
                         "1.001e-5 -> 1e-5 folded into gamma")
    return mapping


def _conv_of(bn_layer):
    if bn_layer == "bn1":
        return "conv1"
    if bn_layer.endswith("_downsample_bn"):
        return bn_layer[:-len("bn")] + "conv"
    return re.sub(r"_bn(\d)$", r"_conv\1", bn_layer)


def _block_counts(layers, pattern, first_stage, first_block):
    """Blocks per stage among layer names; `pattern` captures (stage, block) numbered from
    `first_stage` / `first_block`."""
    counts = [0, 0, 0, 0]
    for layer in layers:
        match = pattern.search(layer)
        if match and 0 <= int(match.group(1)) - first_stage < 4:
            stage = int(match.group(1)) - first_stage
            counts[stage] = max(counts[stage], int(match.group(2)) - first_block + 1)
    return tuple(counts)


def map_keras_resnet_v2(source, model, config, options):
    layers, dropped = _split(source, _v2_layer)
    variables = variables_by_path(model)
    leaves = torch_layout.paths_by_leaf(variables)
    source_blocks = _block_counts(layers, V2_BLOCK, 2, 1)
    backbone = V2_BACKBONES.get(source_blocks, f"resnet50v2 with backbone_units: "
                                               f"{list(source_blocks)}")
    torch_layout.require(
        V2_ANCHOR in leaves,
        f"{source.path}: a Keras applications ResNet V2 (pre-activation) file; the model's "
        f"backbone is not a ResNet v2 (set backbone: {backbone})")
    model_blocks = _block_counts((leaf.split("/")[0] for leaf in leaves), V2_BLOCK, 2, 1)
    torch_layout.require(
        model_blocks == source_blocks,
        f"{source.path}: the source's ResNet v2 has {source_blocks} units per stage, the model "
        f"{model_blocks} (backbone resnet50v2 = (3, 4, 6, 3), resnet101v2 = (3, 4, 23, 3))")
    mapping = Mapping()
    mapping.notes.append("Keras ResNet V2 weights expect input scaled to [-1, 1]; the model "
                         "gets the pipeline's normalised RGB")
    for layer, names in sorted(layers.items()):
        for variable, name in sorted(names.items()):
            path = leaves.get(f"{layer}/{variable}", f"{layer}/{variable}")
            if layer == "conv1_conv" and variable == "kernel":
                torch_layout.first_layer(mapping, path, source.tensors[name], variables, name)
            else:
                mapping.put(path, source.tensors[name], name)
    torch_layout.drop(mapping, dropped, "the ImageNet classifier `predictions` is not imported")
    return mapping


register_importer(
    "keras_resnet", map_keras_resnet, formats=("keras_h5",), models=MODELS, fits=_fits_v1,
    doc="Keras applications ResNet50/ResNet101 (v1) .h5 -> the DeepLab ResNet "
        "(stride_in_1x1: true)")
register_importer(
    "keras_resnet_v2", map_keras_resnet_v2, formats=("keras_h5",), models=MODELS,
    fits=_fits_v2,
    doc="Keras applications ResNet50V2/ResNet101V2 .h5 -> backbone resnet50v2/resnet101v2")
