"""Torch-format ResNet-50/101 weights -> the DeepLab models' ResNet (models/resnet_v1.py).

Layouts (all flat state dicts; a wrapper prefix such as `module.` is found and stripped):
- `torchvision_resnet`: torchvision's ImageNet ResNet (v1.5: stride on the 3x3 conv),
  7x7 stem `conv1`, ImageNet classifier `fc.*` (dropped);
- `deep_stem_resnet`: the deep-stem ResNet-101 of U2PL / AEL (`conv1.{0,1,3,4,6}`, `bn1`
  with 128 channels, no `fc`);
- `deeplabv2_coco`: DeepLab-v2's COCO ResNet-101 (`resnet101COCO-41f33a49.pth`: Caffe v1
  strides on the 1x1 conv, no `num_batches_tracked`, head `layer5.conv2d_list.{0..3}` ->
  deeplabv2's `layer5`, whose kernels depend on the class count).
Our layer names follow the torch keys (`resnet_v1.torch_key_to_keras`). The layout each file
was trained in (stride placement, stem, pool mode) is not in the tensors' shapes: a note
says when the model's backbone options differ from it, since the function then changes.
"""

import re

from ssma_tf.errors import InputError
from ssma_tf.models.resnet_v1 import torch_key_to_keras
from ssma_tf.weights import torch_layout
from ssma_tf.weights.assign import Mapping, variables_by_path
from ssma_tf.weights.importers import register_importer

MODELS = ("deeplabv2", "deeplabv3plus")
BLOCK = re.compile(r"layer(\d)[._](\d+)[._]conv1[./]")
# backbone options the source was trained with (checked against the model's config)
TRAINED_WITH = {
    "torchvision_resnet": {"stride_in_1x1": False, "deep_stem": False},
    "deep_stem_resnet": {"stride_in_1x1": False, "deep_stem": True, "pool_ceil": True},
    "deeplabv2_coco": {"stride_in_1x1": True, "deep_stem": False, "pool_ceil": True,
                       "dilation_style": "all"},
}


def _prefix(source, anchor):
    return torch_layout.find_prefix(source.tensors, (anchor,))


def _fits_torchvision(source):
    prefix = _prefix(source, "layer1.0.conv1.weight")
    return (prefix is not None and prefix + "conv1.weight" in source.tensors
            and prefix + "layer5.conv2d_list.0.weight" not in source.tensors)


def _fits_deep_stem(source):
    prefix = _prefix(source, "layer1.0.conv1.weight")
    return prefix is not None and prefix + "conv1.0.weight" in source.tensors


def _fits_coco(source):
    prefix = _prefix(source, "layer1.0.conv1.weight")
    return (prefix is not None and prefix + "conv1.weight" in source.tensors
            and prefix + "layer5.conv2d_list.0.weight" in source.tensors)


def block_counts(names):
    """Blocks per stage (layer1..layer4) among torch keys or Keras paths."""
    counts = [0, 0, 0, 0]
    for name in names:
        match = BLOCK.search(name)
        if match and 1 <= int(match.group(1)) <= 4:
            stage = int(match.group(1)) - 1
            counts[stage] = max(counts[stage], int(match.group(2)) + 1)
    return tuple(counts)


def config_value(config, key):
    """`config.<key>`, or None where the config has no such key."""
    try:
        return getattr(config, key)
    except (AttributeError, KeyError):
        return None


def check_structure(source_blocks, source_deep_stem, leaves, what):
    """InputError (with the config change that fits) if the model's ResNet differs."""
    model_deep_stem = "conv1_0/kernel" in leaves
    torch_layout.require(
        model_deep_stem == source_deep_stem,
        f"{what}: the source has a {'deep' if source_deep_stem else '7x7'} stem, the model "
        f"a {'deep' if model_deep_stem else '7x7'} one (set deep_stem: "
        f"{str(source_deep_stem).lower()})")
    model_blocks = block_counts(leaves)
    torch_layout.require(
        model_blocks == source_blocks,
        f"{what}: the source's ResNet has {source_blocks} blocks per stage, the model "
        f"{model_blocks} (backbone resnet50 = (3, 4, 6, 3), resnet101 = (3, 4, 23, 3))")


def trained_with_notes(trained_with, config):
    """Notes for the backbone options ({key: value the source was trained with}) in which
    the model differs from the source."""
    notes = []
    for key, value in trained_with.items():
        actual = config_value(config, key)
        if actual is not None and actual != value:
            notes.append(f"the source was trained with {key}: {value!r}, the model has "
                         f"{actual!r}: its function differs from the source's")
    return notes


def _map(layout):
    def map_torch_resnet(source, model, config, options):
        prefix = _prefix(source, "layer1.0.conv1.weight")
        variables = variables_by_path(model)
        leaves = torch_layout.paths_by_leaf(variables)
        names = source.names(prefix)
        keys = [name[len(prefix):] for name in names]
        check_structure(block_counts(keys), "conv1.0.weight" in keys, leaves, source.path)
        mapping = Mapping()
        mapping.notes.extend(trained_with_notes(TRAINED_WITH[layout], config))
        head_layer = "layer5/layer5_conv2d_list_0/kernel" in variables
        fc = [n for n, k in zip(names, keys) if k.startswith("fc.")]
        head = [n for n, k in zip(names, keys) if k.startswith("layer5.") and not head_layer]
        torch_layout.drop(mapping, fc, "the ImageNet classifier fc.* is not imported")
        torch_layout.drop(mapping, head, "the DeepLab-v2 head layer5.* has no counterpart in "
                                         "this model: not imported")
        skipped = set(fc) | set(head)
        for name, key in zip(names, keys):
            if name in skipped:
                continue
            try:
                target = torch_key_to_keras(key)
            except ValueError as exc:
                raise InputError(f"{source.path}: {exc}") from None
            if target is None:   # num_batches_tracked
                torch_layout.drop(mapping, [name])
                continue
            leaf = "/".join(target)
            path = leaves.get(leaf, leaf)
            value = source.tensors[name]
            if target[1] == "kernel":
                value = torch_layout.conv_kernel(value)
            if key in ("conv1.weight", "conv1.0.weight"):
                torch_layout.first_layer(mapping, path, value, variables, name)
            else:
                mapping.put(path, value, name)
            if key.startswith("layer5."):
                mapping.head.add(path)
        return mapping

    return map_torch_resnet


register_importer(
    "torchvision_resnet", _map("torchvision_resnet"), formats=("torch",), models=MODELS,
    fits=_fits_torchvision,
    doc="torchvision ImageNet ResNet-50/101 (v1.5) state dict -> the DeepLab ResNet")
register_importer(
    "deep_stem_resnet", _map("deep_stem_resnet"), formats=("torch",), models=MODELS,
    fits=_fits_deep_stem,
    doc="deep-stem ImageNet ResNet-101 (U2PL, conv1.{0,1,3,4,6}) -> the DeepLab ResNet with "
        "deep_stem: true")
register_importer(
    "deeplabv2_coco", _map("deeplabv2_coco"), formats=("torch",), models=MODELS,
    fits=_fits_coco,
    doc="DeepLab-v2 COCO ResNet-101 (resnet101COCO-41f33a49.pth, layer5 head) -> deeplabv2")
