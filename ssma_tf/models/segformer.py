"""Segformer: MiT encoder + all-MLP decoder, for any input height and width.

Decoder (as M3L's SegFormerHead): Dense(C_i -> E) per level, bilinear resize
(align_corners=False) to the c1 grid, concat [c4, c3, c2, c1], 1x1 conv (no bias) + BN +
ReLU, SpatialDropout2D(0.1), 1x1 conv to classes; the model upsamples the logits
bilinearly with align_corners=True to the input size.

Speed: Dense_i, the resize and the fuse conv are all linear, so the decoder computes the
identical result as sum_i resize(c_i @ (A_i W_i) + b_i W_i), with A_i W_i formed from the
same parameters on every call. This skips the 4E -> E conv on the c1 grid (the largest
cost of the model) while keeping the standard parameter layout. Outside BN training
(inference, or freeze_bn) the BN affine map is folded in as well and the biases are
added once on the c1 grid.

freeze_bn: M3L sets the decoder BN to eval mode for all of training, so its running
statistics stay at their initial 0/1 and it acts as a learned affine. `freeze_bn=True`
reproduces that (the BN is always called with training=False); the default False is
standard Segformer.

Decoder feature (`features=("decoder",)`, e.g. for U2PL's representation head): the fused
map after the fuse conv + BN + ReLU, before the dropout and the classifier, as the model
output "feature_decoder" [B, H/4, W/4, decoder_dim]. Only then does the head ("decoder")
return (logits, feature); the variables are the same either way.
"""

import keras
from keras import ops

from ssma_tf.models.layers import batch_norm
from ssma_tf.models.mit import VARIANTS, MixTransformer, _conv_init, mit_config
from ssma_tf.models.ops import bilinear_resize, resize_half_pixel
from ssma_tf.registry import Key, register_model

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
BN_EPSILON = 1e-5


class ResizeToInput(keras.layers.Layer):
    """Upsample logits to the input's H x W (bilinear, align_corners=True), as float32."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return ops.cast(bilinear_resize(x, (shape[1], shape[2]), align_corners=True), "float32")

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])


class SegformerHead(keras.layers.Layer):
    """All-MLP decoder: [c1, c2, c3, c4] -> logits on the c1 grid; with `return_hidden`,
    (logits, the fused map after BN + ReLU that the classifier reads through the dropout)."""

    def __init__(self, num_classes, decoder_dim=256, dropout=0.1, freeze_bn=False,
                 xla_friendly=False, return_hidden=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.decoder_dim = num_classes, decoder_dim
        self.dropout_rate, self.freeze_bn = dropout, freeze_bn
        self.return_hidden = bool(return_hidden)
        self.xla_friendly = bool(xla_friendly)   # matmul resizes (ops.resize_half_pixel)
        self.bn = batch_norm(name="fuse_bn", momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
        self.dropout = keras.layers.SpatialDropout2D(dropout, name="dropout")
        self.classifier = keras.layers.Conv2D(
            num_classes, 1, kernel_initializer=_conv_init(), name="classifier"
        )

    def build(self, input_shapes):
        dim = self.decoder_dim
        dense_init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.linear_kernels, self.linear_biases = [], []
        for i, shape in enumerate(input_shapes):
            self.linear_kernels.append(self.add_weight(
                shape=(shape[-1], dim), initializer=dense_init, name=f"linear_c{i + 1}_kernel"))
            self.linear_biases.append(self.add_weight(
                shape=(dim,), initializer="zeros", name=f"linear_c{i + 1}_bias"))
        # 1x1 fuse conv kernel, rows in concat order [c4, c3, c2, c1]; He fan_out init.
        self.fuse_kernel = self.add_weight(
            shape=(4 * dim, dim),
            initializer=keras.initializers.RandomNormal(stddev=(2.0 / dim) ** 0.5),
            name="fuse_kernel",
        )
        grid = tuple(input_shapes[0][:-1]) + (dim,)
        self.bn.build(grid)
        self.classifier.build(grid)

    def call(self, features, training=None):
        dim = self.decoder_dim
        grid = ops.shape(features[0])[1:3]
        bn_training = bool(training) and not self.freeze_bn
        if bn_training:
            scale, shift = 1.0, 0.0
        else:  # BN in inference is an affine map: fold it into the kernels and bias too
            bn = self.bn
            scale = bn.gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
            shift = bn.beta - bn.moving_mean * scale
        fused, bias = None, shift
        for i, feature in enumerate(features):
            block = 3 - i  # position of level i in the concat [c4, c3, c2, c1]
            fuse_rows = self.fuse_kernel[block * dim:(block + 1) * dim]
            kernel = ops.matmul(self.linear_kernels[i], fuse_rows) * scale
            # a bilinear resize keeps constants, so the biases add up once on the c1 grid
            bias = bias + ops.matmul(self.linear_biases[i][None, :], fuse_rows)[0] * scale
            y = ops.matmul(feature, ops.cast(kernel, feature.dtype))
            if i > 0:
                y = resize_half_pixel(y, grid, self.xla_friendly)
            fused = y if fused is None else fused + y
        x = fused + ops.cast(bias, fused.dtype)
        if bn_training:
            x = self.bn(x, training=True)
        hidden = ops.relu(x)
        logits = self.classifier(self.dropout(hidden, training=training))
        return (logits, hidden) if self.return_hidden else logits

    def compute_output_shape(self, input_shapes):
        logits = tuple(input_shapes[0][:-1]) + (self.num_classes,)
        if self.return_hidden:
            return logits, tuple(input_shapes[0][:-1]) + (self.decoder_dim,)
        return logits

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "decoder_dim": self.decoder_dim, "dropout": self.dropout_rate,
                "freeze_bn": self.freeze_bn, "xla_friendly": self.xla_friendly,
                "return_hidden": self.return_hidden}


def build_segformer(num_classes, modality="rgb", channels=3, *, variant="b0",
                    decoder_dim=256, freeze_bn=False, drop_path_rate=None,
                    xla_friendly=False, features=(), name="segformer") -> keras.Model:
    """Unimodal Segformer: {modality: [B,H,W,C]} -> {"logits": [B,H,W,num_classes]}.

    Layers "encoder" (MixTransformer) and "decoder" (SegformerHead) hold the two
    parameter groups; LayerNorm variables have "norm" in their path. xla_friendly: trace
    the op forms XLA:CPU runs fast (config key `xla`); the weights are the same.
    features: ("decoder",) adds the output "feature_decoder", the head's fused map.
    """
    config = mit_config(variant, drop_path_rate=drop_path_rate)
    inputs = {modality: keras.Input((None, None, channels), name=modality)}
    encoded = MixTransformer(**config, xla_friendly=xla_friendly,
                             name="encoder")(inputs[modality])
    head = SegformerHead(num_classes, decoder_dim, freeze_bn=freeze_bn,
                         xla_friendly=xla_friendly, return_hidden="decoder" in features,
                         name="decoder")
    logits, outputs = head(encoded), {}
    if head.return_hidden:
        logits, outputs["feature_decoder"] = logits
    logits = ResizeToInput(name="logits")(logits, inputs[modality])
    model = keras.Model(inputs, {"logits": logits, **outputs}, name=name)
    model.output_loss_weights = {"logits": 1.0}
    return model


KEYS = {
    "backbone": Key("str", "b0", "MiT variant (tiny: the tests' size)", tuple(VARIANTS),
                    arg="variant"),
    "decoder_dim": Key("int", 256, "Segformer decoder width"),
    "freeze_bn": Key("bool", False, "decoder BatchNorm in inference mode (M3L's setting)"),
    "drop_path_rate": Key("float", None, "stochastic depth rate (default: the variant's)"),
}
register_model("segformer", build_segformer, keys=KEYS, multimodal=False,
               built_features=("decoder",), core_args={"xla_friendly": "xla"})
