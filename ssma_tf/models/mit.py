"""Mix Transformer (MiT-b0..b5), the Segformer encoder, for any input height and width.

Tokens stay on their H x W grid ([R, h, w, C]) from the patch convs to the stage outputs;
attention flattens them only internally, with sizes read from the tensor itself, so no
square or multiple-of-32 assumption exists (64x128, 96x64, 500x500, 540x540 all work;
stage sizes are ceil(H/4), then ceil of halves, as PyTorch's padded convs give).

The same encoder serves several modalities at once ("streams", used by LinearFusion):
the streams are stacked along the batch axis (R = streams * B, stream-major), every conv
and linear is SHARED, and only the LayerNorms hold one (gamma, beta) per stream.
Optionally the attention outputs of the streams are mixed (`fusion_ratio`) and a learned
mask token replaces the stage-1 tokens of any row whose input is all zeros.
"""

import keras
import numpy as np
from keras import ops

from ssma_tf.models.ops import use_xla_forms

LAYER_NORM_EPSILON = 1e-6

VARIANTS = {
    "b0": dict(dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
    # Test-sized encoder: same structure, a few thousand parameters.
    "tiny": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), heads=(1, 2, 3, 4)),
}
HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCH = ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) per stage


def mit_config(variant="b0", **overrides):
    """Resolved encoder hyper-parameters of a variant; keyword arguments override them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MiT variant {variant!r}; expected one of {sorted(VARIANTS)}")
    config = dict(heads=HEADS, sr_ratios=SR_RATIOS, mlp_ratio=4, drop_path_rate=0.1)
    config.update(VARIANTS[variant])
    config.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("dims", "depths", "heads", "sr_ratios"):
        if len(config[key]) != 4:
            raise ValueError(f"MiT {key} needs 4 values (one per stage), got {config[key]}")
    return config


def _dense(units, name):
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        bias_initializer="zeros",
        name=name,
    )


def _conv_init():
    """N(0, 2 / fan_out), as the original (depthwise: fan_out = k*k)."""
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def depthwise3x3_as_shifts(x, kernel, bias):
    """Depthwise 3x3 'same' conv (kernel [3,3,C,1]) as a sum of 9 shifted products."""
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = ops.cast(kernel, x.dtype)
    out = ops.cast(bias, x.dtype)
    for i in range(3):
        for j in range(3):
            out = out + padded[:, i:i + height, j:j + width, :] * kernel[i, j, :, 0]
    return out


def gelu(x):
    """Exact (erf) GELU. Same function as keras' gelu(approximate=False), whose TF kernel
    goes through erfc and is 2x slower on CPU. Written 0.5 * x * (1 + erf(x / sqrt 2)): the
    form the TFLite converter fuses into its GELU op (it has no Erf)."""
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


class StreamLayerNorm(keras.layers.Layer):
    """LayerNorm over channels with one (gamma, beta) per stream of a stream-stacked batch."""

    def __init__(self, num_streams=1, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.num_streams = num_streams
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        shape = (self.num_streams, channels)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")

    def call(self, x):
        mean, variance = ops.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * ops.rsqrt(variance + self.epsilon)
        if self.num_streams == 1:
            return y * self.gamma[0] + self.beta[0]
        shape = ops.shape(x)
        y = ops.reshape(y, (self.num_streams, -1, shape[-1]))
        y = y * self.gamma[:, None, :] + self.beta[:, None, :]
        return ops.reshape(y, shape)

    def get_config(self):
        return {**super().get_config(), "num_streams": self.num_streams, "epsilon": self.epsilon}


class StreamMix(keras.layers.Layer):
    """LinearFusion's mixing: stream s gets ratio * own + (1 - ratio)/(S - 1) * each other."""

    def __init__(self, num_streams, ratio, **kwargs):
        super().__init__(**kwargs)
        self.num_streams = num_streams
        self.ratio = ratio
        off = (1.0 - ratio) / (num_streams - 1)
        self._matrix = np.full((num_streams, num_streams), off, np.float32)
        np.fill_diagonal(self._matrix, ratio)

    def call(self, x):
        shape = ops.shape(x)
        flat = ops.reshape(x, (self.num_streams, -1))
        mixed = ops.matmul(ops.convert_to_tensor(self._matrix, dtype=x.dtype), flat)
        return ops.reshape(mixed, shape)

    def get_config(self):
        return {**super().get_config(), "num_streams": self.num_streams, "ratio": self.ratio}


class DropPath(keras.layers.Layer):
    """Stochastic depth: zero a whole residual branch per row with probability `rate`."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        noise = keras.random.uniform(
            (ops.shape(x)[0], 1, 1, 1), seed=self.seed_generator, dtype=x.dtype
        )
        return x * ops.floor(keep + noise) / keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class EfficientAttention(keras.layers.Layer):
    """Multi-head attention whose keys/values come from an sr x sr strided conv + LN."""

    def __init__(self, dim, heads, sr_ratio, num_streams=1, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.sr_ratio = dim, heads, sr_ratio
        self.num_streams = num_streams
        self.head_dim = dim // heads
        self.q = _dense(dim, "q")
        self.kv = _dense(2 * dim, "kv")
        self.proj = _dense(dim, "proj")
        if sr_ratio > 1:
            self.sr = keras.layers.Conv2D(
                dim, sr_ratio, strides=sr_ratio, kernel_initializer=_conv_init(), name="sr"
            )
            self.sr_norm = StreamLayerNorm(num_streams, name="sr_norm")

    def build(self, input_shape):
        self.q.build(input_shape)
        reduced = input_shape
        if self.sr_ratio > 1:
            self.sr.build(input_shape)
            reduced = self.sr.compute_output_shape(input_shape)
            self.sr_norm.build(reduced)
        self.kv.build(reduced)
        self.proj.build(input_shape[:-1] + (self.dim,))

    def call(self, x):
        shape = ops.shape(x)
        rows, height, width = shape[0], shape[1], shape[2]
        source = self.sr_norm(self.sr(x)) if self.sr_ratio > 1 else x
        # Plain batched matmuls, heads as a batch axis: 20-30% faster than
        # ops.dot_product_attention's einsums on CPU; a single head needs no transpose.
        q = ops.reshape(self.q(x) * self.head_dim**-0.5, (rows, -1, self.heads, self.head_dim))
        kv = ops.reshape(self.kv(source), (rows, -1, 2, self.heads, self.head_dim))
        if self.heads == 1:
            q, k, v = q[:, :, 0], kv[:, :, 0, 0], kv[:, :, 1, 0]
            out = ops.matmul(ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1)))), v)
        else:
            q = ops.transpose(q, (0, 2, 1, 3))
            k = ops.transpose(kv[:, :, 0], (0, 2, 3, 1))
            v = ops.transpose(kv[:, :, 1], (0, 2, 1, 3))
            out = ops.transpose(ops.matmul(ops.softmax(ops.matmul(q, k)), v), (0, 2, 1, 3))
        return self.proj(ops.reshape(out, (rows, height, width, self.dim)))

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "sr_ratio": self.sr_ratio,
            "num_streams": self.num_streams,
        }


class MixFFN(keras.layers.Layer):
    """fc1 -> depthwise 3x3 conv on the token grid -> GELU -> fc2.

    xla_friendly: trace the depthwise conv as 9 shifted multiply-adds (a grouped conv is
    ~50x slower than oneDNN's under XLA:CPU, the shifts are slower without XLA); always
    so under the jax backend (ssma_tf.models.ops.use_xla_forms). Same weights either way.
    """

    def __init__(self, dim, hidden, xla_friendly=False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden, self.xla_friendly = dim, hidden, bool(xla_friendly)
        self.fc1 = _dense(hidden, "fc1")
        self.dwconv = keras.layers.DepthwiseConv2D(
            3, padding="same", depthwise_initializer=_conv_init(), name="dwconv"
        )
        self.fc2 = _dense(dim, "fc2")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        hidden_shape = input_shape[:-1] + (self.hidden,)
        self.dwconv.build(hidden_shape)
        self.fc2.build(hidden_shape)

    def call(self, x):
        x = self.fc1(x)
        if use_xla_forms(self.xla_friendly):
            x = depthwise3x3_as_shifts(x, self.dwconv.kernel, self.dwconv.bias)
        else:
            x = self.dwconv(x)
        return self.fc2(gelu(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden,
                "xla_friendly": self.xla_friendly}


class MiTBlock(keras.layers.Layer):
    """Pre-norm block: x + DropPath(fuse(Attn(LN x))); x + DropPath(MixFFN(LN x))."""

    def __init__(self, dim, heads, sr_ratio, mlp_ratio, drop_path, num_streams=1,
                 fusion_ratio=None, xla_friendly=False, **kwargs):
        super().__init__(**kwargs)
        self.config = dict(dim=dim, heads=heads, sr_ratio=sr_ratio, mlp_ratio=mlp_ratio,
                           drop_path=drop_path, num_streams=num_streams,
                           fusion_ratio=fusion_ratio, xla_friendly=bool(xla_friendly))
        self.norm1 = StreamLayerNorm(num_streams, name="norm1")
        self.attn = EfficientAttention(dim, heads, sr_ratio, num_streams, name="attn")
        self.fuse = (
            StreamMix(num_streams, fusion_ratio, name="fuse")
            if fusion_ratio is not None and num_streams > 1 else None
        )
        self.norm2 = StreamLayerNorm(num_streams, name="norm2")
        self.mlp = MixFFN(dim, dim * mlp_ratio, xla_friendly=xla_friendly, name="mlp")
        self.drop_path = DropPath(drop_path, name="drop_path")
        # Optional layer (attn_out, block_input) -> attn_out, set by the owning encoder
        # after construction (TokenFusion's token exchange); None = no hook.
        self.token_mixer = None

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, training=None):
        a = self.attn(self.norm1(x))
        if self.fuse is not None:
            a = self.fuse(a)
        if self.token_mixer is not None:
            a = self.token_mixer(a, x)
        x = x + self.drop_path(a, training=training)
        return x + self.drop_path(self.mlp(self.norm2(x)), training=training)

    def get_config(self):
        return {**super().get_config(), **self.config}


class MixTransformer(keras.layers.Layer):
    """The 4-stage MiT encoder on a stream-stacked batch [S*B, H, W, C] -> [c1, c2, c3, c4].

    num_streams: modalities stacked along the batch (stream-major); convs/linears shared,
        LayerNorms per stream.
    fusion_ratio: if set (and S > 1), LinearFusion mixing inside every attention layer.
    mask_token: if True, a learned N(0,1) token replaces every stage-1 token (after the
        patch conv and its LayerNorm) of each row whose input is all zeros, i.e. of each
        missing modality of each sample.
    xla_friendly: trace the op forms XLA:CPU runs fast (MixFFN); for a jit-compiled step.
    """

    def __init__(self, dims, depths, heads, sr_ratios, mlp_ratio=4, drop_path_rate=0.1,
                 num_streams=1, fusion_ratio=None, mask_token=False, xla_friendly=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.config = dict(dims=tuple(dims), depths=tuple(depths), heads=tuple(heads),
                           sr_ratios=tuple(sr_ratios), mlp_ratio=mlp_ratio,
                           drop_path_rate=drop_path_rate, num_streams=num_streams,
                           fusion_ratio=fusion_ratio, mask_token=mask_token,
                           xla_friendly=bool(xla_friendly))
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        self.pads, self.patch_convs, self.patch_norms = [], [], []
        self.stages, self.stage_norms = [], []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            kernel, stride, pad = PATCH[i]
            n = i + 1
            self.pads.append(keras.layers.ZeroPadding2D(pad, name=f"patch_pad{n}"))
            self.patch_convs.append(keras.layers.Conv2D(
                dim, kernel, strides=stride, kernel_initializer=_conv_init(),
                name=f"patch_embed{n}"))
            self.patch_norms.append(StreamLayerNorm(num_streams, name=f"patch_norm{n}"))
            start = sum(depths[:i])
            self.stages.append([
                MiTBlock(dim, heads[i], sr_ratios[i], mlp_ratio, rates[start + j],
                         num_streams, fusion_ratio, xla_friendly=xla_friendly,
                         name=f"block{n}_{j + 1}")
                for j in range(depth)
            ])
            self.stage_norms.append(StreamLayerNorm(num_streams, name=f"norm{n}"))

    def build(self, input_shape):
        if self.config["mask_token"]:
            self.mask_token = self.add_weight(
                shape=(self.config["dims"][0],),
                initializer=keras.initializers.RandomNormal(stddev=1.0),
                name="mask_token",
            )
        shape = tuple(input_shape)
        for i, dim in enumerate(self.config["dims"]):
            padded = self.pads[i].compute_output_shape(shape)
            self.patch_convs[i].build(padded)
            shape = self.patch_convs[i].compute_output_shape(padded)
            self.patch_norms[i].build(shape)
            for block in self.stages[i]:
                block.build(shape)
            self.stage_norms[i].build(shape)

    def call(self, x, training=None):
        features = []
        for i in range(4):
            tokens = self.patch_norms[i](self.patch_convs[i](self.pads[i](x)))
            if i == 0 and self.config["mask_token"]:
                missing = ops.all(ops.equal(x, 0), axis=(1, 2, 3))
                token = ops.cast(self.mask_token, tokens.dtype)
                tokens = ops.where(missing[:, None, None, None], token, tokens)
            for block in self.stages[i]:
                tokens = block(tokens, training=training)
            x = self.stage_norms[i](tokens)
            features.append(x)
        return features

    def compute_output_shape(self, input_shape):
        shape, shapes = tuple(input_shape), []
        for i, dim in enumerate(self.config["dims"]):
            kernel, stride, pad = PATCH[i]
            shape = (shape[0],) + tuple(
                None if s is None else (s + 2 * pad - kernel) // stride + 1 for s in shape[1:3]
            ) + (dim,)
            shapes.append(shape)
        return shapes

    def get_config(self):
        return {**super().get_config(), **self.config}


def build_mit(variant="b0", channels=3, *, modality="rgb", dims=None, depths=None,
              heads=None, sr_ratios=None, drop_path_rate=None, xla_friendly=False,
              name="mit") -> keras.Model:
    """MiT encoder model: {modality: [B,H,W,channels]} -> {"c1".."c4"} at strides 4..32.
    xla_friendly: trace the XLA:CPU-friendly op forms (for a jit-compiled step)."""
    config = mit_config(variant, dims=dims, depths=depths, heads=heads,
                        sr_ratios=sr_ratios, drop_path_rate=drop_path_rate)
    inputs = {modality: keras.Input((None, None, channels), name=modality)}
    features = MixTransformer(**config, xla_friendly=xla_friendly,
                              name="encoder")(inputs[modality])
    outputs = {f"c{i + 1}": f for i, f in enumerate(features)}
    return keras.Model(inputs, outputs, name=name)
