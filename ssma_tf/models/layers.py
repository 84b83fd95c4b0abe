"""Shared building blocks: He-initialised convs, the BatchNorm factory, resize layers.

Conventions follow the original AdapNet++/SSMA code: SAME padding, kernels drawn from a
truncated normal with stddev sqrt(2 / (k*k*C_in)), BN momentum 0.99 and epsilon 1e-5,
biases (where present) initialised to 0.01.
"""

import math

import keras
from keras import ops

from ssma_tf.models.ops import bilinear_resize

BN_MOMENTUM = 0.99
BN_EPSILON = 1e-5
BIAS_INIT = 0.01


def batch_norm(name=None, **kwargs) -> keras.layers.BatchNormalization:
    """BatchNormalization with the house defaults (per-replica statistics; a built model is
    synchronised across replicas by `synchronize_batch_norm`)."""
    kwargs.setdefault("momentum", BN_MOMENTUM)
    kwargs.setdefault("epsilon", BN_EPSILON)
    return keras.layers.BatchNormalization(name=name, **kwargs)


def synchronize_batch_norm(model):
    """Make every BatchNormalization inside `model` (nested models and layers included)
    compute its training statistics over all replicas of the distribution strategy it runs
    under; returns `model`.

    Keras reads `BatchNormalization.synchronized` each time the layer is called (in
    `_moments`), so this applies to an already built model, before its step is traced; the
    weights, checkpoints and inference are unchanged. Synchronisation only exists for the
    TensorFlow backend; other backends (jax) have no multi-replica strategy, so this is a
    no-op there.
    """
    if keras.backend.backend() != "tensorflow":
        return model
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def he_truncated(kernel_size: int, in_channels: int) -> keras.initializers.Initializer:
    """Truncated normal with stddev sqrt(2 / (k*k*C_in)), as the original code."""
    return keras.initializers.TruncatedNormal(
        stddev=math.sqrt(2.0 / (kernel_size * kernel_size * in_channels))
    )


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def conv(x, filters, kernel_size, *, strides=1, dilation=1, use_bias=False, name=None):
    """Conv2D (SAME) with He truncated-normal init; bias (if any) starts at 0.01."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=he_truncated(kernel_size, x.shape[-1]),
        bias_initializer=keras.initializers.Constant(BIAS_INIT),
        name=name,
    )(x)


def conv_bn(x, filters, kernel_size, *, strides=1, dilation=1, relu=True, name=None):
    """conv (no bias) -> BN [-> ReLU]; layers named `<name>`, `<name>_bn`."""
    x = conv(x, filters, kernel_size, strides=strides, dilation=dilation, name=name)
    x = batch_norm(name=f"{name}_bn" if name else None)(x)
    return keras.layers.ReLU()(x) if relu else x


def bn_relu(x, name=None):
    """BN -> ReLU (the pre-activation of a residual unit)."""
    return keras.layers.ReLU()(batch_norm(name=name)(x))


def upconv_bn(x, filters, kernel_size, strides, name):
    """Transposed conv (SAME, output exactly input*stride, no bias) -> BN, no ReLU."""
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=he_truncated(kernel_size, x.shape[-1]),
        name=name,
    )(x)
    return batch_norm(name=f"{name}_bn")(x)


@keras.saving.register_keras_serializable(package="ssma_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resize `x` to the spatial size of `reference` (NHWC)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        if not all(isinstance(d, int) for d in shape[1:3]):
            # unknown H, W in a TF graph (serving signature, mixed-size eval): ops.image.resize
            # checks `size <= 0` in Python, which a symbolic size cannot answer
            return bilinear_resize(x, (shape[1], shape[2]))
        return ops.image.resize(x, (shape[1], shape[2]), interpolation="bilinear")

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="ssma_tf")
class BroadcastLike(keras.layers.Layer):
    """Tile a [B,1,1,C] tensor over the spatial size of `reference`.

    Equals bilinear resizing of a 1x1 map, without a resize op.
    """

    def call(self, x, reference):
        return x * ops.ones_like(reference[..., :1], dtype=x.dtype)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def global_pool(x):
    """Spatial mean, kept as [B,1,1,C]."""
    return keras.layers.GlobalAveragePooling2D(keepdims=True)(x)


def float32_output(x, name):
    """Identity that casts to float32 (model outputs stay float32 under mixed precision)."""
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)
