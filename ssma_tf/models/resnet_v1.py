"""Post-activation ResNet-50/101 ("v1") as the DeepLab models use it.

`resnet_v1_features(x, ...)` applies the network to a Keras tensor and returns the feature
pyramid {"P2": layer1 (stride 4), "P3": layer2 (8), "P4": layer3 (16, or 8 at OS 8),
"P5": layer4 (32, 16 or 8 = the output stride)} (keras-hub FeaturePyramidBackbone
convention: Pn = stage n). Any H and W work; sizes follow PyTorch's arithmetic.

Variants, each an option (the DeepLab builders pick the defaults per model):
- `stride_in_1x1`: True = Caffe / DeepLab-v2 "v1" (stride 2 on the block's first 1x1 conv,
  the layout of the COCO DeepLab-v2 file); False (default) = torchvision "v1.5" (stride on
  the 3x3 conv; torchvision, DMT, U2PL, UniMatch, TorchSemiSeg weights).
- `deep_stem`: False (default) = 7x7/2 conv 3->64; True = three 3x3 convs 3->64 (stride 2)
  ->64->128 (U2PL / UniMatch / TorchSemiSeg "v1c"), 128 channels into layer1.
- `pool_ceil`: the stem's 3x3/2/1 max-pool in PyTorch `ceil_mode` (DeepLab-v2, U2PL) or
  floor mode (default: torchvision, UniMatch). On an even size ceil mode gives n/2 + 1.
- `output_stride` 8 / 16 / 32: the last two / one / no stages trade their stride for
  dilation. `dilation_style`: "torchvision" (default, `replace_stride_with_dilation`: the
  first block of a dilated stage keeps the previous dilation, e.g. layer3 1,2,2,..., layer4
  2,4,4 at OS 8) or "all" (Caffe DeepLab-v2: every block of layer3 has 2, of layer4 4).
  `multi_grid` (e.g. (1, 2, 4), one factor per layer4 block) multiplies layer4's dilation
  per block and overrides the first-block rule there: U2PL's OS 8 gives 4, 8, 16,
  TorchSemiSeg's OS 16 gives 2, 4, 8.
- `zero_init_residual`: each block's last BN starts at gamma = 0 (U2PL).
- `bn_affine_trainable=False`: BN gamma/beta frozen while the moving statistics still
  update in training (s4GAN). Note: setting `layer.trainable = True` on an enclosing
  layer or model re-enables them (Keras propagates the flag to every variable).
- `width`: channel multiplier for tiny tests; `units` overrides `depth`'s blocks per stage.

Padding is PyTorch's: strided convs with k > 1 (the 7x7 stem, the deep stem's first conv,
v1.5's strided 3x3) use explicit symmetric ZeroPadding2D + "valid" (Keras "same" pads
(0, 1) on even sizes); stride-1 convs use "same", which is exact.
BatchNorm: epsilon 1e-5, momentum 0.9 (PyTorch's eps 1e-5 / momentum 0.1). Convs have no
bias; kernels use the house He truncated-normal init.

Layer names mirror the PyTorch state-dict module paths (torchvision, DeepLab-v2 COCO file,
U2PL deep stem). The rule: replace "." by "_", except
`downsample.0` -> `downsample_conv` and `downsample.1` -> `downsample_bn`; prefix with
`<name>_` when a name prefix is given:

    conv1.weight                   -> conv1/kernel            (7x7 stem)
    conv1.{0,3,6}.weight           -> conv1_{0,3,6}/kernel    (deep stem convs)
    conv1.{1,4}.*, bn1.*           -> conv1_{1,4}/*, bn1/*    (deep stem BNs, stem BN)
    layer2.0.conv2.weight          -> layer2_0_conv2/kernel
    layer2.0.bn3.running_var       -> layer2_0_bn3/moving_variance
    layer2.0.downsample.0.weight   -> layer2_0_downsample_conv/kernel
    layer2.0.downsample.1.bias     -> layer2_0_downsample_bn/beta

Conv kernels transpose OIHW -> HWIO (`w.transpose(2, 3, 1, 0)`); BN weight, bias,
running_mean, running_var -> gamma, beta, moving_mean, moving_variance;
`num_batches_tracked` has no counterpart. `torch_key_to_keras` implements the rule.
"""

import keras

from ssma_tf.errors import ConfigError
from ssma_tf.models.layers import batch_norm, conv, he_truncated, scaled
from ssma_tf.registry import Key, register_backbone

BN_MOMENTUM = 0.9       # PyTorch momentum 0.1
BN_EPSILON = 1e-5
DEPTH_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_CHANNELS = (64, 128, 256, 512)    # bottleneck width; block output = 4x
EXPANSION = 4
DILATED_STAGES = {8: 2, 16: 1, 32: 0}   # output stride -> number of last stages dilated
DILATION_STYLES = ("torchvision", "all")

_BN_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                 "running_var": "moving_variance"}
_CONV_VARIABLES = {"weight": "kernel", "bias": "bias"}


def _join(prefix, name):
    return f"{prefix}_{name}" if prefix else name


def bn(x, name, *, zero_gamma=False, affine_trainable=True):
    """BatchNormalization with PyTorch's defaults (eps 1e-5, torch momentum 0.1)."""
    layer = batch_norm(name=name, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                       gamma_initializer="zeros" if zero_gamma else "ones")
    y = layer(x)
    if not affine_trainable:
        layer.gamma.trainable = False
        layer.beta.trainable = False
    return y


def torch_conv(x, filters, kernel_size, *, strides=1, dilation=1, use_bias=False, name):
    """Conv2D with PyTorch padding (k // 2 * dilation each side), no bias by default."""
    if strides == 1 or kernel_size == 1:   # "same" is exact here (1x1: no padding at all)
        return conv(x, filters, kernel_size, strides=strides, dilation=dilation,
                    use_bias=use_bias, name=name)
    x = keras.layers.ZeroPadding2D(dilation * (kernel_size // 2), name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation, padding="valid",
        use_bias=use_bias, kernel_initializer=he_truncated(kernel_size, x.shape[-1]),
        name=name,
    )(x)


def stage_plan(units, output_stride=16, *, dilation_style="torchvision", multi_grid=None):
    """[(stride, (dilation of each block)) for layer1..layer4]."""
    if output_stride not in DILATED_STAGES:
        raise ConfigError(f"output_stride: expected one of {tuple(DILATED_STAGES)}, "
                          f"got {output_stride!r}")
    if dilation_style not in DILATION_STYLES:
        raise ConfigError(f"dilation_style: expected one of {DILATION_STYLES}, "
                          f"got {dilation_style!r}")
    if multi_grid is not None and len(multi_grid) != units[3]:
        raise ConfigError(f"multi_grid: expected one factor per layer4 block ({units[3]}), "
                          f"got {tuple(multi_grid)!r}")
    first_dilated = 4 - DILATED_STAGES[output_stride]
    plan, dilation = [], 1
    for stage, n in enumerate(units):
        stride = 1 if stage == 0 else 2
        previous = dilation
        if stage >= first_dilated:
            dilation, stride = dilation * stride, 1
        if stage == 3 and multi_grid is not None:
            dilations = tuple(dilation * int(g) for g in multi_grid)
        elif dilation_style == "torchvision":
            dilations = (previous,) + (dilation,) * (n - 1)
        else:
            dilations = (dilation,) * n
        plan.append((stride, dilations))
    return plan


def _bottleneck(x, planes, *, stride, dilation, stride_in_1x1, projection, bn_kwargs,
                zero_init_residual, name):
    """Post-activation bottleneck: 1x1 -> 3x3 (dilated) -> 1x1 (x4), + shortcut, ReLU."""
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    y = torch_conv(x, planes, 1, strides=s1, name=f"{name}_conv1")
    y = keras.layers.ReLU()(bn(y, f"{name}_bn1", **bn_kwargs))
    y = torch_conv(y, planes, 3, strides=s3, dilation=dilation, name=f"{name}_conv2")
    y = keras.layers.ReLU()(bn(y, f"{name}_bn2", **bn_kwargs))
    y = torch_conv(y, planes * EXPANSION, 1, name=f"{name}_conv3")
    y = bn(y, f"{name}_bn3", zero_gamma=zero_init_residual, **bn_kwargs)
    if projection:
        shortcut = torch_conv(x, planes * EXPANSION, 1, strides=stride,
                              name=f"{name}_downsample_conv")
        shortcut = bn(shortcut, f"{name}_downsample_bn", **bn_kwargs)
    else:
        shortcut = x
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def _stem(x, *, deep_stem, pool_ceil, width, bn_kwargs, prefix):
    if deep_stem:
        c64 = scaled(64, width)
        x = torch_conv(x, c64, 3, strides=2, name=_join(prefix, "conv1_0"))
        x = keras.layers.ReLU()(bn(x, _join(prefix, "conv1_1"), **bn_kwargs))
        x = torch_conv(x, c64, 3, name=_join(prefix, "conv1_3"))
        x = keras.layers.ReLU()(bn(x, _join(prefix, "conv1_4"), **bn_kwargs))
        x = torch_conv(x, scaled(128, width), 3, name=_join(prefix, "conv1_6"))
    else:
        x = torch_conv(x, scaled(64, width), 7, strides=2, name=_join(prefix, "conv1"))
    x = keras.layers.ReLU()(bn(x, _join(prefix, "bn1"), **bn_kwargs))
    # 3x3/2 pool with padding 1. Ceil mode = one more zero row/column at the bottom/right,
    # used only when the size is even. Zeros stand in for -inf: the input is post-ReLU.
    padding = ((1, 2), (1, 2)) if pool_ceil else 1
    x = keras.layers.ZeroPadding2D(padding, name=_join(prefix, "maxpool_pad"))(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="valid",
                                     name=_join(prefix, "maxpool"))(x)


def resnet_v1_features(x, *, depth=101, units=None, output_stride=16, deep_stem=False,
                       stride_in_1x1=False, dilation_style="torchvision", multi_grid=None,
                       pool_ceil=False, zero_init_residual=False, bn_affine_trainable=True,
                       width=1.0, name=""):
    """Apply the ResNet to the Keras tensor `x`; return {"P2", "P3", "P4", "P5"}.

    Channels (width 1): 256, 512, 1024, 2048. `units` (four block counts) overrides
    `depth` (50 or 101). `name` prefixes every layer name (`<name>_conv1`, ...).
    """
    if units is None:
        if depth not in DEPTH_UNITS:
            raise ConfigError(f"depth: expected one of {tuple(DEPTH_UNITS)}, got {depth!r}")
        units = DEPTH_UNITS[depth]
    units = tuple(int(n) for n in units)
    if len(units) != 4 or min(units) < 1:
        raise ConfigError(f"units: expected four positive block counts, got {units!r}")
    plan = stage_plan(units, output_stride, dilation_style=dilation_style,
                      multi_grid=multi_grid)
    bn_kwargs = {"affine_trainable": bn_affine_trainable}
    x = _stem(x, deep_stem=deep_stem, pool_ceil=pool_ceil, width=width,
              bn_kwargs=bn_kwargs, prefix=name)
    features = {}
    for stage, ((stride, dilations), planes) in enumerate(zip(plan, STAGE_CHANNELS), 1):
        for b, dilation in enumerate(dilations):
            x = _bottleneck(
                x, scaled(planes, width), stride=stride if b == 0 else 1, dilation=dilation,
                stride_in_1x1=stride_in_1x1, projection=b == 0, bn_kwargs=bn_kwargs,
                zero_init_residual=zero_init_residual, name=_join(name, f"layer{stage}_{b}"),
            )
        features[f"P{stage + 1}"] = x
    return features


def _is_batch_norm(module):
    parts = module.split(".")
    last = parts[-1]
    if last.startswith("bn"):
        return True
    if len(parts) >= 2 and parts[-2] == "downsample":
        return last == "1"
    return module in ("conv1.1", "conv1.4")    # the deep stem's BNs


def torch_key_to_keras(key, prefix=""):
    """PyTorch state-dict key -> (Keras layer name, variable name), or None to skip.

    'layer2.0.downsample.1.running_var' -> ('layer2_0_downsample_bn', 'moving_variance');
    'num_batches_tracked' -> None. Also maps the DeepLab-v2 head `layer5.conv2d_list.{i}`
    (deeplab.py names it the same way). Kernels still need OIHW -> HWIO.
    """
    module, _, variable = key.rpartition(".")
    if variable == "num_batches_tracked":
        return None
    table = _BN_VARIABLES if _is_batch_norm(module) else _CONV_VARIABLES
    if variable not in table:
        raise ValueError(f"{key}: no Keras counterpart for {variable!r}")
    name = module.replace(".", "_")
    name = name.replace("downsample_0", "downsample_conv").replace("downsample_1",
                                                                   "downsample_bn")
    return _join(prefix, name), table[variable]


KEYS = {
    "backbone_units": Key("list", None, "blocks per stage; overrides the depth (e.g. [1, 1, 1, 1]"
                          " for tests)", arg="units"),
    "output_stride": Key("int", 16, "output stride (dilation replaces the last strides)",
                         (8, 16, 32)),
    "deep_stem": Key("bool", False, "three 3x3 convs as the stem (U2PL's and UniMatch's ResNet)"),
    "stride_in_1x1": Key("bool", False, "Caffe-style stride on each first 1x1 conv (DeepLab-v2's"
                         " COCO ResNet); false: on the 3x3 (torchvision v1.5)"),
    "dilation_style": Key("str", "torchvision", "all: every block of a dilated stage dilated"
                          " (Caffe); torchvision: its first block keeps the previous dilation",
                          DILATION_STYLES),
    "multi_grid": Key("list", None, "layer4 dilation factors, one per block (e.g. [1, 2, 4])"),
    "pool_ceil": Key("bool", False, "ceil-mode stem max-pool (Caffe)"),
    "zero_init_residual": Key("bool", False, "each block's last BN starts at gamma 0"),
    "bn_affine_trainable": Key("bool", True, "train BN gamma and beta (s4GAN: false)"),
    "width_multiplier": Key("float", 1.0, "channel width multiplier", arg="width"),
}


def resnet50(x, **options):
    """The ResNet-50 pyramid of `x` (resnet_v1_features)."""
    return resnet_v1_features(x, depth=50, **options)


def resnet101(x, **options):
    """The ResNet-101 pyramid of `x` (resnet_v1_features)."""
    return resnet_v1_features(x, depth=101, **options)


register_backbone("resnet50", resnet50, keys=KEYS)
register_backbone("resnet101", resnet101, keys=KEYS)
