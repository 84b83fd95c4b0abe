"""The original AdapNet++ / SSMA TF1 graphs for the importer tests, written from their published
description: every variable name and shape (`adapnet_shapes`, `ssma_shapes`; channels scaled by
a width multiplier as our models scale them), a writer of TF1-style checkpoints with exactly
those names (`save_tf1`), and the original inference graph in plain TF ops (`original_logits`,
`original_ssma_logits`: BGR raw 0..255 in, logits out) to compare imported models against."""

import numpy as np
import tensorflow as tf

UNITS = (3, 4, 6, 3)
BLOCK_OUT = (256, 512, 1024, 2048)
BN = ("beta", "gamma", "moving_mean", "moving_variance")


def scaled(channels, width):
    return max(1, int(round(channels * width)))


def _conv_bn(shapes, scope, kernel):
    shapes[f"{scope}/weights"] = list(kernel)
    shapes.update({f"{scope}/BatchNorm/{v}": [kernel[-1]] for v in BN})


def encoder_shapes(scope, width, units=UNITS):
    """{name: shape} of the AdapNet++ encoder, skip taps and eASPP under `scope` (`units`
    per block: the original's 3, 4, 6, 3, or fewer for a quick test)."""
    s = {f"{scope}conv0/BatchNorm/{v}": [3] for v in BN}
    c64 = scaled(64, width)
    _conv_bn(s, f"{scope}conv1", (7, 7, 3, c64))
    inp = c64
    for b, (n, out) in enumerate(zip(units, BLOCK_OUT), 1):
        out_c, w = scaled(out, width), scaled(out // 4, width)
        for u in range(1, n + 1):
            unit = f"{scope}block{b}/unit_{u}/bottleneck_v1/"
            _conv_bn(s, unit + "conv1", (1, 1, inp if u == 1 else out_c, w))
            _conv_bn(s, unit + "conv2", (3, 3, w, w))
            _conv_bn(s, unit + "conv3", (1, 1, w, out_c))
            if u == 1:
                s[unit + "shortcut/weights"] = [1, 1, w if b == 1 else inp, out_c]
        inp = out_c
    c256, c64, c2048 = scaled(256, width), scaled(64, width), scaled(2048, width)
    _conv_bn(s, f"{scope}conv256", (1, 1, c2048, c256))
    for i in range(3):
        n = 7 + i
        _conv_bn(s, f"{scope}conv{n}0", (1, 1, c2048, c64))
        _conv_bn(s, f"{scope}conv{n}", (3, 3, c64, c64))
        _conv_bn(s, f"{scope}conv24{n}", (3, 3, c64, c64))
        _conv_bn(s, f"{scope}conv{n}1", (1, 1, c64, c256))
    _conv_bn(s, f"{scope}conv57", (1, 1, c2048, c256))
    _conv_bn(s, f"{scope}conv10", (1, 1, 5 * c256, c256))
    _conv_bn(s, f"{scope}conv32", (1, 1, scaled(256, width), scaled(24, width)))
    _conv_bn(s, f"{scope}conv174", (1, 1, scaled(512, width), scaled(24, width)))
    return s


def _decoder_shapes(s, scope, width, classes):
    c256, c24 = scaled(256, width), scaled(24, width)
    _conv_bn(s, f"{scope}conv41", (4, 4, c256, c256))
    _conv_bn(s, f"{scope}conv89", (3, 3, c256 + c24, c256))
    _conv_bn(s, f"{scope}conv96", (3, 3, c256, c256))
    _conv_bn(s, f"{scope}conv16", (4, 4, c256, c256))
    _conv_bn(s, f"{scope}conv88", (3, 3, c256 + c24, c256))
    _conv_bn(s, f"{scope}conv95", (3, 3, c256, c256))
    _conv_bn(s, f"{scope}conv78", (1, 1, c256, classes))
    _conv_bn(s, f"{scope}conv5", (8, 8, classes, classes))


def adapnet_shapes(width=1.0, classes=12, scope="resnet_v2_50/", aux=True, units=UNITS):
    """{name: shape} of the original AdapNet++ model variables (evaluate.py's set)."""
    s = encoder_shapes(scope, width, units)
    _decoder_shapes(s, scope, width, classes)
    if aux:
        c256 = scaled(256, width)
        _conv_bn(s, f"{scope}conv911", (1, 1, c256, classes))
        _conv_bn(s, f"{scope}conv912", (1, 1, c256, classes))
    return s


def ssma_shapes(width=1.0, classes=12, prefix="resnet_v2_50/"):
    """{name: shape} of the original SSMA model variables: experts rgb/, depth/, fusion."""
    s = {**encoder_shapes(f"rgb/{prefix}", width), **encoder_shapes(f"depth/{prefix}", width)}
    c256, c24 = scaled(256, width), scaled(24, width)

    def gate(squeeze, excite, channels, eta):
        hidden = max(1, 2 * channels // eta)
        s[f"{squeeze}/weights"], s[f"{squeeze}/biases"] = [3, 3, 2 * channels, hidden], [hidden]
        s[f"{excite}/weights"], s[f"{excite}/biases"] = [3, 3, hidden, 2 * channels], [
            2 * channels]

    gate("conv511", "conv512", c256, 16)
    _conv_bn(s, "conv515", (1, 1, 2 * c256, c256))
    for squeeze, excite, project in (("conv513", "conv514", "conv552"),
                                     ("conv518", "conv519", "conv553")):
        gate(squeeze, excite, c24, 6)
        s[f"{project}/weights"], s[f"{project}/biases"] = [3, 3, 2 * c24, c24], [c24]
    _conv_bn(s, "conv550", (1, 1, c256, c24))
    _conv_bn(s, "conv551", (1, 1, c256, c24))
    _decoder_shapes(s, "", width, classes)
    return s


def adam_snapshot_names(shapes, scope):
    """The extra tensors original train.py saves: Adam slots (AdapNet++: under the scope
    twice), the power accumulators and Global_Step."""
    extra = {"Global_Step": []}
    for name, shape in shapes.items():
        if "moving_" not in name:
            extra[f"{scope}{name}/Adam"] = shape
            extra[f"{scope}{name}/Adam_1"] = shape
    extra[f"{scope}beta1_power"] = []
    extra[f"{scope}beta2_power"] = []
    return extra


def random_values(shapes, seed=0):
    """Plausible random tensors: He-scaled kernels, BN gammas near 1, positive variances; the
    input BN (conv0) with raw-pixel statistics."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        base = name.split(":")[0]
        if name.endswith("Global_Step"):
            out[name] = np.array(0, np.int32)
            continue
        if "conv0/BatchNorm/moving_mean" in base:
            value = rng.uniform(90, 130, shape)
        elif "conv0/BatchNorm/moving_variance" in base:
            value = rng.uniform(2500, 4500, shape)
        elif base.endswith("gamma"):
            value = rng.uniform(0.6, 1.4, shape)
        elif base.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif base.endswith(("beta", "moving_mean", "biases")):
            value = rng.normal(0, 0.1, shape)
        elif len(shape) == 4:
            value = rng.normal(0, np.sqrt(1.0 / (shape[0] * shape[1] * shape[2])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        out[name] = np.asarray(value, np.float32)
    return out


def save_tf1(prefix, tensors):
    """A TF V2-bundle checkpoint holding exactly `tensors` under their names (as TF1's Saver
    writes them); returns the prefix."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


# -- the original inference graph ------------------------------------------------------------

def _bn(t, x, scope):
    g = lambda v: t[f"{scope}/BatchNorm/{v}"]  # noqa: E731
    return tf.nn.batch_normalization(x, g("moving_mean"), g("moving_variance"), g("beta"),
                                     g("gamma"), 1e-5)


def _conv(t, x, scope, stride=1, rate=1, kernel=None, bias=False):
    kernel = t[f"{scope}/weights"] if kernel is None else kernel
    y = tf.nn.conv2d(x, kernel, stride, "SAME", dilations=rate)
    return y + t[f"{scope}/biases"] if bias else y


def _cbr(t, x, scope, relu=True, **kw):
    y = _bn(t, _conv(t, x, scope, **kw), scope)
    return tf.nn.relu(y) if relu else y


def _tconv(t, x, scope, stride):
    kernel = t[f"{scope}/weights"]
    shape = tf.shape(x)
    out = [shape[0], shape[1] * stride, shape[2] * stride, kernel.shape[2]]
    return _bn(t, tf.nn.conv2d_transpose(x, kernel, out, stride, "SAME"), scope)


def original_encoder(t, x, scope, rates=(3, 6, 12)):
    """The original encoder on BGR raw 0..255 `x`: (skip1, skip2, eASPP out)."""
    x = _bn(t, x, f"{scope}conv0")
    x = _cbr(t, x, f"{scope}conv1", stride=2)
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    outs, closing = {}, None
    for b, n in enumerate(UNITS, 1):
        for u in range(1, n + 1):
            unit = f"{scope}block{b}/unit_{u}/bottleneck_v1/"
            if u > 1:
                a = tf.nn.relu(_bn(t, x, f"{scope}block{b}/unit_{u - 1}/bottleneck_v1/conv3"))
            elif b == 4:
                a = tf.nn.relu(_bn(t, x, closing))
            else:
                a = x
            stride = 2 if u == 1 and b in (2, 3) else 1
            c1 = _cbr(t, a, unit + "conv1")
            kernel = t[unit + "conv2/weights"]
            if (b == 2 and u == 4) or (b == 3 and u >= 3):
                half = kernel.shape[-1] // 2
                c2 = tf.concat([_conv(t, c1, None, rate=1, kernel=kernel[..., :half]),
                                _conv(t, c1, None, rate=2, kernel=kernel[..., half:])], -1)
            else:
                c2 = _conv(t, c1, None, stride=stride, rate=2 if b == 4 else 1, kernel=kernel)
            c2 = tf.nn.relu(_bn(t, c2, unit + "conv2"))
            c3 = _conv(t, c2, unit + "conv3")
            if u == 1:
                shortcut = _conv(t, c1 if b == 1 else a, unit + "shortcut", stride=stride)
            else:
                shortcut = x
            x = shortcut + c3
        last = f"{scope}block{b}/unit_{n}/bottleneck_v1/conv3"
        if b == 3:
            closing = last
        else:
            x = tf.nn.relu(_bn(t, x, last))
            outs[b] = x
    b4 = outs[4]
    branches = [_cbr(t, b4, f"{scope}conv256")]
    for i, rate in enumerate(rates):
        n = 7 + i
        y = _cbr(t, b4, f"{scope}conv{n}0")
        y = _cbr(t, y, f"{scope}conv{n}", rate=rate)
        y = _cbr(t, y, f"{scope}conv24{n}", rate=rate)
        branches.append(_cbr(t, y, f"{scope}conv{n}1"))
    pooled = _cbr(t, tf.reduce_mean(b4, [1, 2], keepdims=True), f"{scope}conv57")
    branches.append(pooled * tf.ones_like(b4[..., :1]))
    easpp = _cbr(t, tf.concat(branches, -1), f"{scope}conv10", relu=False)
    skip1 = _cbr(t, outs[1], f"{scope}conv32", relu=False)
    skip2 = _cbr(t, outs[2], f"{scope}conv174", relu=False)
    return skip1, skip2, easpp


def _decode(t, scope, easpp, skip1, skip2, attention=None):
    up1 = _tconv(t, easpp, f"{scope}conv41", 2)
    if attention:
        skip2 = skip2 * _cbr(t, tf.reduce_mean(up1, [1, 2], keepdims=True), attention[0])
    x = _cbr(t, tf.concat([up1, skip2], -1), f"{scope}conv89")
    x = _cbr(t, x, f"{scope}conv96")
    up2 = _tconv(t, x, f"{scope}conv16", 2)
    if attention:
        skip1 = skip1 * _cbr(t, tf.reduce_mean(up2, [1, 2], keepdims=True), attention[1])
    x = _cbr(t, tf.concat([up2, skip1], -1), f"{scope}conv88")
    x = _cbr(t, x, f"{scope}conv95")
    x = _cbr(t, x, f"{scope}conv78")
    return _tconv(t, x, f"{scope}conv5", 4)


def original_logits(tensors, x_bgr, scope="resnet_v2_50/"):
    """The original AdapNet++ logits for BGR raw 0..255 `x_bgr`."""
    t = {k: tf.constant(v) for k, v in tensors.items()}
    skip1, skip2, easpp = original_encoder(t, tf.constant(x_bgr, tf.float32), scope)
    return _decode(t, scope, easpp, skip1, skip2).numpy()


def original_ssma_logits(tensors, x1_bgr, x2_bgr, prefix="resnet_v2_50/"):
    """The original SSMA logits for modality 1 and 2 as BGR raw 0..255 images."""
    t = {k: tf.constant(v) for k, v in tensors.items()}
    rgb = original_encoder(t, tf.constant(x1_bgr, tf.float32), f"rgb/{prefix}")
    depth = original_encoder(t, tf.constant(x2_bgr, tf.float32), f"depth/{prefix}")

    def gate(streams, squeeze, excite):
        x = tf.concat(streams, -1)
        s = tf.nn.relu(_conv(t, x, squeeze, bias=True))
        return x * tf.sigmoid(_conv(t, s, excite, bias=True))

    fused = _cbr(t, gate([rgb[2], depth[2]], "conv511", "conv512"), "conv515", relu=False)
    skip8 = _conv(t, gate([rgb[1], depth[1]], "conv513", "conv514"), "conv552", bias=True)
    skip4 = _conv(t, gate([rgb[0], depth[0]], "conv518", "conv519"), "conv553", bias=True)
    return _decode(t, "", fused, skip4, skip8, attention=("conv550", "conv551")).numpy()
