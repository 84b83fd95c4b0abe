"""Pre-activation ResNet-50/101 ("v2") with the structure of Keras applications'
ResNet50V2 / ResNet101V2, so that their ImageNet weights import one to one.

`resnet_v2_features(x, ...)` applies the network to a Keras tensor and returns the feature
pyramid {"P2" (stride 4), "P3" (8), "P4" (16, or 8 at OS 8), "P5" (the output stride)}.

Structure (as Keras applications build it):
- stem: ZeroPadding 3 + 7x7/2 conv 3 -> 64 with bias (no BN, no ReLU), then ZeroPadding 1 +
  3x3/2 max-pool (valid). The padding zeros take part in the max over the raw conv output.
- stages conv2..conv5, (3, 4, 6, 3) units (ResNet-101: conv4 has 23), bottleneck widths
  64, 128, 256, 512, output 4x. Each unit: `preact_bn` -> ReLU; the projection `0_conv`
  (1x1, bias, from the pre-activation; first unit of each stage) or the identity; `1_conv`
  1x1 (no bias) -> BN -> ReLU -> `2_conv` 3x3 (no bias) -> BN -> ReLU -> `3_conv` 1x1
  (bias) -> + shortcut. No BN after `3_conv`.
- the stride 2 sits on the 3x3 `2_conv` of the **last** unit of conv2, conv3 and conv4
  (conv5 keeps stride 1); that unit's identity shortcut is a 1x1 max-pool with stride 2
  (every other row and column). With one unit per stage, that unit both projects and strides.
- `post_bn` -> `post_relu` after conv5 = "P5". P2, P3, P4 are the inputs of the strided
  last units of conv2, conv3, conv4 (the last feature at stride 4, 8, 16).
BatchNorm: epsilon 1.001e-5 (Keras applications), momentum 0.99.

`output_stride` 32 (Keras), 16 or 8: once the stride so far reaches the output stride, a
unit that would stride keeps stride 1 at the current dilation and every later unit's 3x3
conv has the dilation times 2 (OS 16: conv5 at 2; OS 8: the rest of conv4 at 2, conv5 at 4).

Padding: strided convs use explicit symmetric ZeroPadding2D + "valid" (Keras applications'
`*_pad` layers); stride-1 3x3 convs use "same", which pads the same (dilation) zeros each
side, so the function is Keras' exactly.

Layer names are the Keras applications' names (the weight files' groups), prefixed with
`<name>_` when a name is given: `conv1_conv`, `conv{2..5}_block{b}_preact_bn`,
`conv{k}_block{b}_{0,1,2,3}_conv`, `conv{k}_block{b}_{1,2}_bn`, `conv{k}_block{b}_out`,
`post_bn`, `post_relu`.
"""

import keras

from ssma_tf.errors import ConfigError
from ssma_tf.models.layers import batch_norm, scaled
from ssma_tf.models.resnet_v1 import KEYS as RESNET_V1_KEYS
from ssma_tf.models.resnet_v1 import torch_conv
from ssma_tf.registry import register_backbone

BN_EPSILON = 1.001e-5
DEPTH_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_CHANNELS = (64, 128, 256, 512)    # bottleneck width; unit output = 4x
EXPANSION = 4
OUTPUT_STRIDES = (8, 16, 32)
STEM_STRIDE = 4


def _join(prefix, name):
    return f"{prefix}_{name}" if prefix else name


def _bn_relu(x, name, relu_name=None):
    x = batch_norm(name=name, epsilon=BN_EPSILON)(x)
    return keras.layers.ReLU(name=relu_name)(x)


def unit_plan(units, output_stride=32):
    """[[(stride, dilation) of each unit] for conv2..conv5] (the module docstring's rule)."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride: expected one of {OUTPUT_STRIDES}, "
                          f"got {output_stride!r}")
    plan, current, dilation = [], STEM_STRIDE, 1
    for stage, n in enumerate(units):
        stage_plan = []
        for b in range(n):
            stride = 2 if stage < 3 and b == n - 1 else 1
            if stride > 1 and current >= output_stride:
                stage_plan.append((1, dilation))
                dilation *= stride
            else:
                stage_plan.append((stride, dilation))
                current *= stride
        plan.append(stage_plan)
    return plan


def _unit(x, planes, *, stride, dilation, projection, name):
    """Pre-activation bottleneck: BN-ReLU -> 1x1 -> 3x3 (strided / dilated) -> 1x1 (x4),
    + the projection of the pre-activation, or the (subsampled) identity."""
    preact = _bn_relu(x, f"{name}_preact_bn", f"{name}_preact_relu")
    if projection:
        shortcut = torch_conv(preact, planes * EXPANSION, 1, strides=stride, use_bias=True,
                              name=f"{name}_0_conv")
    elif stride > 1:
        shortcut = keras.layers.MaxPooling2D(1, strides=stride,
                                             name=f"{name}_shortcut_pool")(x)
    else:
        shortcut = x
    y = torch_conv(preact, planes, 1, name=f"{name}_1_conv")
    y = _bn_relu(y, f"{name}_1_bn", f"{name}_1_relu")
    y = torch_conv(y, planes, 3, strides=stride, dilation=dilation, name=f"{name}_2_conv")
    y = _bn_relu(y, f"{name}_2_bn", f"{name}_2_relu")
    y = torch_conv(y, planes * EXPANSION, 1, use_bias=True, name=f"{name}_3_conv")
    return keras.layers.Add(name=f"{name}_out")([shortcut, y])


def resnet_v2_features(x, *, depth=50, units=None, output_stride=32, width=1.0, name=""):
    """Apply the ResNet v2 to the Keras tensor `x`; return {"P2", "P3", "P4", "P5"}.

    Channels (width 1): 256, 512, 1024, 2048. `units` (four unit counts) overrides `depth`
    (50 or 101). `name` prefixes every layer name.
    """
    if units is None:
        if depth not in DEPTH_UNITS:
            raise ConfigError(f"depth: expected one of {tuple(DEPTH_UNITS)}, got {depth!r}")
        units = DEPTH_UNITS[depth]
    units = tuple(int(n) for n in units)
    if len(units) != 4 or min(units) < 1:
        raise ConfigError(f"units: expected four positive unit counts, got {units!r}")
    plan = unit_plan(units, output_stride)
    x = torch_conv(x, scaled(64, width), 7, strides=2, use_bias=True,
                   name=_join(name, "conv1_conv"))
    x = keras.layers.ZeroPadding2D(1, name=_join(name, "pool1_pad"))(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name=_join(name, "pool1_pool"))(x)
    features = {}
    for stage, (stage_plan, planes) in enumerate(zip(plan, STAGE_CHANNELS)):
        for b, (stride, dilation) in enumerate(stage_plan):
            if b == len(stage_plan) - 1 and stage < 3:
                features[f"P{stage + 2}"] = x
            x = _unit(x, scaled(planes, width), stride=stride, dilation=dilation,
                      projection=b == 0, name=_join(name, f"conv{stage + 2}_block{b + 1}"))
    features["P5"] = _bn_relu(x, _join(name, "post_bn"), _join(name, "post_relu"))
    return features


KEYS = {key: RESNET_V1_KEYS[key] for key in ("backbone_units", "output_stride",
                                             "width_multiplier")}


def resnet50v2(x, **options):
    """The ResNet-50 v2 pyramid of `x` (resnet_v2_features)."""
    return resnet_v2_features(x, depth=50, **options)


def resnet101v2(x, **options):
    """The ResNet-101 v2 pyramid of `x` (resnet_v2_features)."""
    return resnet_v2_features(x, depth=101, **options)


register_backbone("resnet50v2", resnet50v2, keys=KEYS)
register_backbone("resnet101v2", resnet101v2, keys=KEYS)
