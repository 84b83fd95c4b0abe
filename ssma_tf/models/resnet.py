"""Pre-activation ResNet-50 with multiscale residual units (AdapNet++ encoder, OS 16).

Structure as the released AdapNet++ code (DeepSceneSeg/AdapNet-pp):
- optional BN on the raw input, 7x7/2 conv-BN-ReLU, 3x3/2 max-pool;
- four blocks of bottleneck units (out channels 256/512/1024/2048, bottleneck = out/4),
  stride 2 on the 3x3 conv (and the projection shortcut) of the first unit of blocks 2, 3;
  block 4 keeps stride 1 and uses dilation instead;
- full pre-activation units (BN-ReLU before the convs, no ReLU after the sum); blocks 1, 2
  and 4 close with BN-ReLU, block 3 does not (block 4's first unit pre-activates it);
- block 1 unit 1 takes the (already activated) stem output and feeds its projection
  shortcut from its own conv1 output, a quirk of the original kept for weight porting;
- multiscale units: the 3x3 conv is split into two halves along its output channels with
  dilations (r1, r2), concatenated, then BN-ReLU;
- dropout on conv3 of block 4's last unit.
"""

import keras

from ssma_tf.errors import ConfigError
from ssma_tf.models.layers import batch_norm, bn_relu, conv, conv_bn, scaled

BLOCK_CHANNELS = (256, 512, 1024, 2048)
BLOCK_STRIDES = (1, 2, 2, 1)
RATE_PRESETS = ("code", "paper")


def multiscale_rates(block: int, unit: int, rates: str):
    """Dilations (r1, r2) of the 3x3 conv of `unit` (1-based) in `block` (1-based), or None.

    "code": the released checkpoints (block 2 unit 4: (1,2); block 3 units >= 3: (1,2);
    block 4: (2,2)). "paper": block 3 r2 = 2,4,8,16; block 4 r1 = 2, r2 = 4,8,16.
    """
    if rates not in RATE_PRESETS:
        raise ConfigError(f"rates: expected one of {RATE_PRESETS}, got {rates!r}")
    if block == 2 and unit >= 4:
        return (1, 2)
    if block == 3 and unit >= 3:
        return (1, 2) if rates == "code" else (1, 2 ** (unit - 2))
    if block == 4:
        return (2, 2) if rates == "code" else (2, 2 ** (unit + 1))
    return None


def _conv2(x, filters, strides, rates, name):
    """The unit's 3x3 conv -> BN -> ReLU, multiscale when `rates` is given."""
    if rates is None:
        return conv_bn(x, filters, 3, strides=strides, name=name)
    r1, r2 = rates
    if r1 == r2:
        return conv_bn(x, filters, 3, dilation=r1, name=name)
    half = filters // 2
    a = conv(x, half, 3, dilation=r1, name=f"{name}_a")
    b = conv(x, filters - half, 3, dilation=r2, name=f"{name}_b")
    x = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
    return keras.layers.ReLU()(batch_norm(name=f"{name}_bn")(x))


def _unit(x, out_ch, bottleneck, *, strides, rates, preact, projection,
          shortcut_from_conv1=False, dropout=None, name):
    """One bottleneck unit; returns the un-normalised residual sum."""
    a = bn_relu(x, name=f"{name}_preact_bn") if preact else x
    c1 = conv_bn(a, bottleneck, 1, name=f"{name}_conv1")
    c2 = _conv2(c1, bottleneck, strides, rates, name=f"{name}_conv2")
    c3 = conv(c2, out_ch, 1, name=f"{name}_conv3")
    if dropout is not None:  # kept at rate 0 too: same graph, same weight order
        c3 = keras.layers.Dropout(dropout, name=f"{name}_dropout")(c3)
    if projection:
        source = c1 if shortcut_from_conv1 else a
        shortcut = conv(source, out_ch, 1, strides=strides, name=f"{name}_shortcut")
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([shortcut, c3])


def resnet50_features(x, *, width=1.0, units=(3, 4, 6, 3), rates="code",
                      dropout=0.7, input_bn=True):
    """Apply stem + the four blocks to `x`; return the feature pyramid.

    Returns {"block1": 1/4 (activated), "block2": 1/8 (activated),
    "block3": 1/16 (raw sum), "block4": 1/16 (activated)}.
    """
    if len(units) != 4 or any(int(n) < 1 for n in units):
        raise ConfigError(f"units: expected four positive unit counts, got {tuple(units)!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    if input_bn:
        x = batch_norm(name="input_bn")(x)
    x = conv_bn(x, scaled(64, width), 7, strides=2, name="stem_conv")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    features = {}
    for b, (n_units, out, stride) in enumerate(zip(units, BLOCK_CHANNELS, BLOCK_STRIDES), 1):
        out_ch, bottleneck = scaled(out, width), scaled(out // 4, width)
        for k in range(1, int(n_units) + 1):
            first = k == 1
            x = _unit(
                x, out_ch, bottleneck,
                strides=stride if first else 1,
                rates=multiscale_rates(b, k, rates),
                # The first unit of blocks 1-3 gets an activated tensor (stem / block
                # close); block 4's first unit pre-activates block 3's raw sum.
                preact=not first or b == 4,
                projection=first,
                shortcut_from_conv1=first and b == 1,
                dropout=dropout if (b == 4 and k == n_units) else None,
                name=f"block{b}_unit{k}",
            )
        if b == 3:
            features["block3"] = x
        else:
            x = bn_relu(x, name=f"block{b}_out_bn")
            features[f"block{b}"] = x
    return features
