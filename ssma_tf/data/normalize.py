"""Per-modality normalisation to float32 model inputs (pure TF ops: tf.data and serving graphs)."""

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_modality(x, spec, depth_max=10.0):
    """One modality to float32 by its encoding.

    color: (x/255 - ImageNet mean) / ImageNet std; image/jet/hha: x/127.5 - 1;
    raw: metres (x * depth_scale) / depth_max, so a 0 (no reading) stays exactly 0.
    """
    x = tf.cast(x, tf.float32)
    if spec.encoding == "color":
        std = tf.constant(IMAGENET_STD, tf.float32)
        return x * (1.0 / (255.0 * std)) - tf.constant(IMAGENET_MEAN, tf.float32) / std
    if spec.encoding == "raw":
        return x * (spec.depth_scale / depth_max)
    return x * (1.0 / 127.5) - 1.0


def normalize(name_to_tensor, specs, depth_max=10.0):
    """{name: tensor} -> {name: float32 tensor}, each normalised per `specs[name]`."""
    return {name: normalize_modality(x, specs[name], depth_max) for name, x in name_to_tensor.items()}
