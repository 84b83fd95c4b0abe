"""The original AdapNet++ TF1 checkpoints -> our AdapNet_pp.

Accepted: released models and training snapshots (`resnet_v2_50/` or the older `resnet_v1_50/`
scope; Adam slots, `beta*_power` and `Global_Step` are left unused and reported), and the ImageNet
init `AdapNet_pp_init.ckpt` (names with a literal `:0`, a v1 ResNet-50 with BN on every conv and
no BN statistics). The rules (our layer names stay as they are):

- a unit's `conv3/BatchNorm` normalises the unit's residual sum: it becomes the next unit's
  `preact_bn`, or the block's `out_bn` (block 3's last one: `block4_unit1_preact_bn`); conv3 and
  the shortcuts have no BN, so the ImageNet init's `shortcut/BatchNorm` stay unused;
- a multiscale 3x3 kernel is one tensor: its first half of output channels goes to `conv2_a`,
  the second to `conv2_b` (block 4's rate-2 halves are one plain dilated conv here too);
- transposed kernels are [k, k, out, in] in both; BN epsilon is 1e-5 in both;
- the input: the original reads BGR raw 0..255 into a BatchNorm (`conv0`). Our model reads RGB
  normalised per modality (x' = x * scale + bias, `data.normalize.channel_affine`), so the
  input BN's four vectors are reversed (BGR -> RGB) and its statistics rewritten for x':
  mean' = (mean - b) / a, var' = (var + eps) / a^2 - eps with x = a * x' + b. This is exact at
  every pixel, borders included (the BN is per pixel; conv1 zero-pads the BN's output in both
  graphs). Folding the BN into conv1 instead would not be: conv1 pads its input with zeros, and
  a zero of the BN's input is not a zero of its output. conv1's kernel is reversed along its
  input channels. The ImageNet init has no `conv0`: our input BN stays as built (it trains on
  batch statistics, as the original's did);
- a modality of C != 3 channels (raw depth) has no exact counterpart: conv1's kernel becomes
  its mean over the three input channels repeated C times, the input BN's vectors their mean
  over the three channels (no fold); the report says so.

The eASPP rates and the block dilations are not stored in a checkpoint: they come from the config
(the Cityscapes-19 release was trained with easpp_rates [6, 12, 18]). The aux heads resize with
half-pixel centres here, TF1's `resize_images` without: aux outputs differ slightly, logits do not.
"""

import numpy as np

from ssma_tf.data.normalize import channel_affine
from ssma_tf.data.schema import ModalitySpec
from ssma_tf.errors import InputError
from ssma_tf.models.layers import BN_EPSILON
from ssma_tf.weights.assign import Mapping, variables_by_path
from ssma_tf.weights.importers import register_importer

PREFIXES = ("resnet_v2_50/", "resnet_v1_50/")
BN_VECTORS = ("gamma", "beta", "moving_mean", "moving_variance")
FIRST_CONV = "block1/unit_1/bottleneck_v1/conv1/weights"    # every layout has it
DEFAULT_SPEC = ModalitySpec("rgb", "color", 3, "uint8")
# (our layer, the original's scope)
DECODER = (("up1", "conv41"), ("dec1_conv1", "conv89"), ("dec1_conv2", "conv96"),
           ("up2", "conv16"), ("dec2_conv1", "conv88"), ("dec2_conv2", "conv95"),
           ("pre_logits", "conv78"), ("up3", "conv5"), ("aux1_conv", "conv911"),
           ("aux2_conv", "conv912"))
HEAD = ("pre_logits", "up3", "aux1_conv", "aux2_conv")


def easpp_layers(rates):
    """[(our layer, the original's scope)] of the eASPP and the skip taps; branch i of the
    three atrous branches is conv{7+i}0, conv{7+i}, conv24{7+i}, conv{7+i}1."""
    layers = [("easpp_1x1", "conv256")]
    for i, rate in enumerate(rates):
        n = 7 + i
        layers += [(f"easpp_r{rate}_reduce", f"conv{n}0"), (f"easpp_r{rate}_atrous1", f"conv{n}"),
                   (f"easpp_r{rate}_atrous2", f"conv24{n}"), (f"easpp_r{rate}_expand", f"conv{n}1")]
    return layers + [("easpp_pool", "conv57"), ("easpp_project", "conv10"),
                     ("skip1", "conv32"), ("skip2", "conv174")]


class Tf1Names:
    """A TF1 source's tensors by name without the `:0` some files store."""

    def __init__(self, source):
        self.tensors = source.tensors
        self.stored = {(n[:-2] if n.endswith(":0") else n): n for n in source.tensors}

    def has(self, name):
        return name in self.stored

    def get(self, name):
        """(the stored name, its array)."""
        return self.stored[name], self.tensors[self.stored[name]]

    def prefix(self, root=""):
        """Which of PREFIXES holds the ResNet under `root` ("" or "rgb/"), or None."""
        return next((p for p in PREFIXES if self.has(root + p + FIRST_CONV)), None)

    def units(self, scope):
        """Units per block under `scope`, counted from the names."""
        counts = []
        for block in range(1, 5):
            unit = 0
            while self.has(f"{scope}block{block}/unit_{unit + 1}/bottleneck_v1/conv1/weights"):
                unit += 1
            counts.append(unit)
        return tuple(counts)


class Mapper:
    """Puts a TF1 source's tensors onto one (sub-)model's layers, by our layer name."""

    def __init__(self, names, mapping, model, part=None):
        """`part`: a nested model of `model` (an encoder or an SSMA expert); its variables
        are addressed by their local path and recorded under `model`'s path."""
        self.names, self.mapping = names, mapping
        by_id = {id(v): path for path, v in variables_by_path(model).items()}
        self.variables = variables_by_path(part or model)
        self.paths = {local: by_id[id(v)] for local, v in self.variables.items()}

    def has_layer(self, layer):
        return any(p.startswith(f"{layer}/") for p in self.paths)

    def one(self, local, name, required, transform=None, head=False):
        """Source tensor `name` (transformed) -> our variable `local`, when the model has it."""
        if local not in self.paths:
            return
        path = self.paths[local]
        if head:
            self.mapping.head.add(path)
        if self.names.has(name):
            stored, value = self.names.get(name)
            self.mapping.put(path, transform(value) if transform else value, stored)
        elif required:
            self.mapping.want(path, name)

    def bn(self, layer, scope, required, head=False):
        """Our BatchNorm `layer` <- the original's `scope`/BatchNorm."""
        for vector in BN_VECTORS:
            self.one(f"{layer}/{vector}", f"{scope}/BatchNorm/{vector}", required, head=head)

    def layer(self, layer, scope, required, head=False):
        """Our conv `layer` (+ bias, + BN `<layer>_bn`) <- the original's `scope`."""
        self.one(f"{layer}/kernel", f"{scope}/weights", required, head=head)
        self.one(f"{layer}/bias", f"{scope}/biases", required, head=head)
        self.bn(f"{layer}_bn", scope, required, head=head)


def closing_bn(block, unit, units):
    """Our BN that the original's `block<block>/unit_<unit>/.../conv3/BatchNorm` is."""
    if unit < units[block - 1]:
        return f"block{block}_unit{unit + 1}_preact_bn"
    return "block4_unit1_preact_bn" if block == 3 else f"block{block}_out_bn"


def map_resnet(mapper, scope, units):
    """Every unit of the ResNet under `scope` (all required)."""
    for block, count in enumerate(units, 1):
        for unit in range(1, count + 1):
            ours, theirs = f"block{block}_unit{unit}", f"{scope}block{block}/unit_{unit}/" \
                                                       "bottleneck_v1/"
            mapper.layer(f"{ours}_conv1", f"{theirs}conv1", True)
            if mapper.has_layer(f"{ours}_conv2_a"):
                half = mapper.variables[f"{ours}_conv2_a/kernel"].shape[-1]
                mapper.one(f"{ours}_conv2_a/kernel", f"{theirs}conv2/weights", True,
                           lambda k: k[..., :half])
                mapper.one(f"{ours}_conv2_b/kernel", f"{theirs}conv2/weights", True,
                           lambda k: k[..., half:])
                mapper.bn(f"{ours}_conv2_bn", f"{theirs}conv2", True)
            else:
                mapper.layer(f"{ours}_conv2", f"{theirs}conv2", True)
            mapper.layer(f"{ours}_conv3", f"{theirs}conv3", True)
            if unit == 1:
                mapper.layer(f"{ours}_shortcut", f"{theirs}shortcut", True)
            mapper.bn(closing_bn(block, unit, units), f"{theirs}conv3", True)


def input_affine(spec):
    """(a, b) per channel with the stored value x = a * x' + b for our normalised input x'
    (no spec: a colour image, ImageNet-normalised, the toolkit's default for RGB)."""
    scale, bias = channel_affine(spec or DEFAULT_SPEC)
    scale, bias = np.asarray(scale, np.float64), np.asarray(bias, np.float64)
    return 1.0 / scale, -bias / scale


def fold_input_bn(vectors, a, b, eps=BN_EPSILON):
    """The input BN's {vector: [3] BGR} for RGB input x' with x = a * x' + b (exact)."""
    rgb = {k: np.asarray(v, np.float64)[::-1] for k, v in vectors.items()}
    return {"gamma": rgb["gamma"], "beta": rgb["beta"],
            "moving_mean": (rgb["moving_mean"] - b) / a,
            "moving_variance": (rgb["moving_variance"] + eps) / a ** 2 - eps}


def map_input(mapper, scope, channels, spec, notes, with_input_bn):
    """The input BN (`conv0`, when `with_input_bn`) and conv1's input channels for a
    modality of `channels` channels normalised per `spec`."""
    kernel_name = f"{scope}conv1/weights"

    def first_kernel(kernel):      # [7, 7, 3 (BGR), out] -> our input channels
        if channels == 3:
            return kernel[:, :, ::-1, :]
        return np.repeat(kernel.mean(axis=2, keepdims=True), channels, axis=2)

    if channels != 3:
        notes.append(f"{scope}conv1/weights: {channels} input channels, the original has 3: "
                     f"the kernel's mean over its input channels, repeated {channels} times")
    mapper.one("stem_conv/kernel", kernel_name, True, first_kernel)
    if not with_input_bn:
        return
    bn_names = [f"{scope}conv0/BatchNorm/{v}" for v in BN_VECTORS]
    if not all(mapper.names.has(n) for n in bn_names):
        mapper.bn("input_bn", f"{scope}conv0", True)     # reports what is missing
        return
    stored = {v: mapper.names.get(n)[1] for v, n in zip(BN_VECTORS, bn_names)}
    if channels == 3:
        a, b = input_affine(spec)
        folded = fold_input_bn(stored, a, b)
        notes.append(f"{scope}conv0/BatchNorm: BGR 0..255 -> RGB "
                     f"{(spec or DEFAULT_SPEC).encoding}-normalised input (exact)")
    else:
        folded = {v: np.repeat(np.mean(stored[v]), channels) for v in BN_VECTORS}
        notes.append(f"{scope}conv0/BatchNorm: the mean of its three channels for "
                     f"{channels} input channels (no exact counterpart)")
    for vector, name in zip(BN_VECTORS, bn_names):
        mapper.one(f"input_bn/{vector}", name, True,
                   lambda _, vector=vector: folded[vector].astype(np.float32))


def map_encoder(names, mapping, model, encoder, scope, *, channels, spec, rates, units):
    """Our encoder (nested model `encoder` of `model`) <- the AdapNet++ encoder, skip taps and
    eASPP under `scope`; only the ResNet when the source is the ImageNet init (no eASPP)."""
    stored = names.units(scope)
    if stored != tuple(units):
        raise InputError(f"{scope}: the checkpoint has {stored} units per block, the model "
                         f"(backbone_units) {tuple(units)}")
    mapper = Mapper(names, mapping, model, encoder)
    full = any(names.has(f"{scope}{theirs}/weights") for _, theirs in easpp_layers(rates))
    has_input_bn = mapper.has_layer("input_bn")
    if full and names.has(f"{scope}conv0/BatchNorm/gamma") and not has_input_bn:
        raise InputError(f"{scope}conv0/BatchNorm: the checkpoint normalises its input with a "
                         f"BatchNorm; build the model with input_bn: true")
    map_input(mapper, scope, channels, spec, mapping.notes, full and has_input_bn)
    mapper.bn("stem_conv_bn", f"{scope}conv1", True)
    map_resnet(mapper, scope, units)
    if full:
        for ours, theirs in easpp_layers(rates):
            mapper.layer(ours, f"{scope}{theirs}", True)
    else:
        mapping.notes.append(f"{scope}: an ImageNet backbone (no conv0, eASPP or decoder): the "
                             "input BN, eASPP, skip taps and decoder keep their initial values")
    return full


def encoder_options(config):
    """map_encoder's units and eASPP rates from the config (neither is stored)."""
    return {"units": tuple(config.backbone_units), "rates": tuple(config.easpp_rates)}


def rate_notes(config, mapping):
    """Report lines on the dilations, which come from the config."""
    if config.rates != "code":
        mapping.notes.append(f"rates: {config.rates}: the original checkpoints were trained with "
                             "the released code's dilations (rates: code)")
    mapping.notes.append(f"eASPP rates {list(config.easpp_rates)} from the config (not stored in "
                         "the checkpoint)")


def map_decoder(names, mapping, model, layers, scope, required):
    """Our decoder `layers` [(our layer, the original's scope)]; the class-count ones are
    the head."""
    mapper = Mapper(names, mapping, model)
    for ours, theirs in layers:
        mapper.layer(ours, f"{scope}{theirs}", required, head=ours in HEAD)
    if required and mapper.has_layer("aux1_conv"):
        mapping.notes.append("aux heads: resized with half-pixel centres (TF1: without); the "
                             "logits are unaffected")


def map_adapnet(source, model, config, options):
    names, mapping = Tf1Names(source), Mapping()
    scope = names.prefix()
    encoder = model.get_layer("encoder")
    spec = (options.get("specs") or {}).get(config.modalities[0])
    full = map_encoder(names, mapping, model, encoder, scope,
                       channels=int(encoder.inputs[0].shape[-1]), spec=spec,
                       **encoder_options(config))
    map_decoder(names, mapping, model, DECODER, scope, required=full)
    rate_notes(config, mapping)
    return mapping


def fits_adapnet(source):
    return Tf1Names(source).prefix() is not None


register_importer(
    "tf1_adapnet_pp", map_adapnet, formats=("tf_checkpoint",), models=("AdapNet_pp",),
    fits=fits_adapnet,
    doc="the original AdapNet++ TF1 checkpoints (released models, training snapshots, the "
        "ImageNet init AdapNet_pp_init.ckpt), resnet_v2_50/ or resnet_v1_50/")
