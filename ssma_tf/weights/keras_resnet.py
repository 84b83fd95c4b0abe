"""Keras applications' ResNet50 / ResNet101 (v1) weight files -> the DeepLab models' ResNet.

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

ResNet50V2 / ResNet101V2 files are recognised but fit no model here: pre-activation
units with the stride in the last unit of a stage fit neither the post-activation DeepLab
ResNet nor AdapNet++'s encoder (which strides in the first unit, puts a BN-ReLU in its
stem before the pool and feeds block 1's shortcut from conv1).
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
TRAINED_WITH = {"stride_in_1x1": True, "deep_stem": False, "pool_ceil": False}


def _split(source):
    """{our layer name: {variable: source dataset name}} and the `predictions` names."""
    prefix = torch_layout.find_prefix(source.tensors, (ANCHOR, ANCHOR + ":0"))
    layers, dropped = {}, []
    for name in source.names(prefix):
        parts = name[len(prefix):].split("/")
        layer, variable = parts[0], parts[-1].split(":")[0]
        ours = _our_layer(layer)
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


def _fits_v1(source):
    names = source.tensors
    return (torch_layout.find_prefix(names, (ANCHOR, ANCHOR + ":0")) is not None
            and any("conv1_bn/" in n for n in names)
            and not any("_preact_bn/" in n for n in names))


def map_keras_resnet(source, model, config, options):
    layers, dropped = _split(source)
    variables = variables_by_path(model)
    leaves = torch_layout.paths_by_leaf(variables)
    check_structure(_block_counts(layers), False, leaves, source.path)
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


def _block_counts(layers):
    counts = [0, 0, 0, 0]
    for layer in layers:
        match = re.match(r"layer(\d)_(\d+)_", layer)
        if match:
            stage = int(match.group(1)) - 1
            counts[stage] = max(counts[stage], int(match.group(2)) + 1)
    return tuple(counts)


register_importer(
    "keras_resnet", map_keras_resnet, formats=("keras_h5",), models=MODELS, fits=_fits_v1,
    doc="Keras applications ResNet50/ResNet101 (v1) .h5 -> the DeepLab ResNet "
        "(stride_in_1x1: true)")
