"""Per-modality normalisation to float32 model inputs (pure TF ops: tf.data and serving graphs)."""

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_affine(spec, depth_max=10.0) -> tuple:
    """(scale, bias), one float per channel: normalised = stored value * scale + bias.

    color: (x/255 - ImageNet mean) / ImageNet std; image/jet/hha: x/127.5 - 1;
    raw: metres (x * depth_scale) / depth_max, so a 0 (no reading) stays exactly 0.
    """
    if spec.encoding == "color":
        return (tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
                tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)))
    if spec.encoding == "raw":
        return (spec.depth_scale / depth_max,) * spec.channels, (0.0,) * spec.channels
    return (1.0 / 127.5,) * spec.channels, (-1.0,) * spec.channels


def _per_channel(values):
    """A scalar when all channels share the value (cheaper to broadcast), else a [C] constant."""
    return values[0] if len(set(values)) == 1 else tf.constant(values, tf.float32)


def normalize_modality(x, spec, depth_max=10.0):
    """One modality [..., C] to float32 by its encoding (see channel_affine)."""
    scale, bias = channel_affine(spec, depth_max)
    x = tf.cast(x, tf.float32) * _per_channel(scale)
    return x + _per_channel(bias) if any(bias) else x


def normalize(name_to_tensor, specs, depth_max=10.0):
    """{name: tensor} -> {name: float32 tensor}, each normalised per `specs[name]`."""
    return {name: normalize_modality(x, specs[name], depth_max)
            for name, x in name_to_tensor.items()}
