"""TokenFusion (as in M3L's `tokenfusion` model): a shared MiT whose streams swap weak tokens.

- Sharing, depth tiling, mask token, shared Segformer decoder and the outputs
  {"logits": stop-gradient mean, "logits_<modality>"} with loss weights 1/(S+1) are
  LinearFusion's (`build_stream_model`), and so is the decoder feature (`features=
  ("decoder",)`: "feature_decoder", the streams' fused decoder maps weighted as the
  ensemble); there is no linear mixing.
- Every stage owns one score predictor per modality (LN -> Dense(d) -> GELU -> Dense(d/2)
  -> GELU -> Dense(d/4) -> GELU -> Dense(2) -> softmax); before every block of the stage it
  scores each token of the block input, mask = softmax(score)[..., 0] in (0, 1).
- In every attention layer, after the output projection and before the residual add,
  each stream's output is multiplied by its mask, and every token whose mask is below
  `threshold` (0.02) is replaced by the other stream's (masked) token at the same position
  (with more than 2 streams: the mean of the other streams' tokens).
- Sparsity: the model also outputs "mask_l1" (float32 [B]): per sample, the sum of its
  masks over all blocks, streams and tokens. `model.output_penalty_weights` =
  {"mask_l1": l1_weight} (1e-4 default); the frameworks add weight * sum / global batch
  (`ssma_tf.frameworks.losses.penalty_loss`), i.e. M3L's l1_lambda * sum|mask| / B. It is a
  model output rather than `add_loss`, because `model.losses` is shared Python state
  that MirroredStrategy's replica threads overwrite (a replica read another's losses).
  `output_loss_weights` still names only the logits.
"""

import keras
from keras import ops

from ssma_tf.models.linear_fusion import ENSEMBLE_KEY, build_stream_model
from ssma_tf.models.mit import MixTransformer, StreamLayerNorm, gelu, mit_config
from ssma_tf.models.segformer import KEYS as SEGFORMER_KEYS
from ssma_tf.registry import Key, register_model

THRESHOLD = 0.02
L1_WEIGHT = 1e-4


class StreamDense(keras.layers.Layer):
    """Dense layer with one (kernel, bias) per stream of a stream-stacked batch."""

    def __init__(self, units, num_streams, **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_streams = units, num_streams

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(self.num_streams, input_shape[-1], self.units), name="kernel",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.bias = self.add_weight(shape=(self.num_streams, self.units), name="bias",
                                    initializer="zeros")

    def call(self, x):
        shape = ops.shape(x)
        flat = ops.reshape(x, (self.num_streams, -1, shape[-1]))
        y = ops.einsum("sni,sio->sno", flat, ops.cast(self.kernel, x.dtype))
        y = y + ops.cast(self.bias, x.dtype)[:, None, :]
        return ops.reshape(y, tuple(shape[:-1]) + (self.units,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_streams": self.num_streams}


def exchange_tokens(attn, masks, num_streams, threshold=THRESHOLD):
    """Mask each stream's tokens, then swap those with mask < threshold for the others' mean.

    attn: [S*B, h, w, C] stream-stacked; masks: [S*B, h, w, 1] in (0, 1).
    """
    shape = ops.shape(attn)
    masked = attn * masks
    streams = ops.reshape(masked, (num_streams, -1, shape[1], shape[2], shape[3]))
    others = (ops.sum(streams, axis=0, keepdims=True) - streams) / float(num_streams - 1)
    others = ops.reshape(others, shape)
    return ops.where(masks < threshold, others, masked)


class TokenExchange(keras.layers.Layer):
    """One stage's score predictors + token exchange; called by each block of the stage.

    Each call appends the per-sample mask sums ([B] float32) to `mask_sums`, which the
    owning encoder empties before and reads right after its blocks run.
    """

    def __init__(self, dim, num_streams, threshold=THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_streams, self.threshold = dim, num_streams, threshold
        self.norm = StreamLayerNorm(num_streams, name="score_norm")
        self.scores = [
            StreamDense(units, num_streams, name=f"score_fc{i + 1}")
            for i, units in enumerate((dim, max(dim // 2, 1), max(dim // 4, 1), 2))
        ]
        self.mask_sums = []

    def build(self, input_shape):
        shape = tuple(input_shape[:-1]) + (self.dim,)
        self.norm.build(shape)
        for layer in self.scores:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def token_masks(self, x):
        """mask = softmax(score)[..., :1] per token of the block input x: [S*B, h, w, 1]."""
        score = self.norm(x)
        for layer in self.scores[:-1]:
            score = gelu(layer(score))
        return ops.softmax(self.scores[-1](score), axis=-1)[..., :1]

    def call(self, attn, x):
        masks = self.token_masks(x)
        per_row = ops.sum(ops.cast(masks, "float32"), axis=(1, 2, 3))
        self.mask_sums.append(ops.sum(ops.reshape(per_row, (self.num_streams, -1)), axis=0))
        return exchange_tokens(attn, ops.cast(masks, attn.dtype), self.num_streams,
                               self.threshold)

    def compute_output_shape(self, attn_shape, x_shape=None):
        return attn_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_streams": self.num_streams,
                "threshold": self.threshold}


class TokenFusionTransformer(MixTransformer):
    """MixTransformer (mask token on) whose blocks exchange tokens between the streams.

    Returns {"features": [c1..c4], "mask_l1": float32 [B] per-sample mask sums}.
    """

    def __init__(self, *args, threshold=THRESHOLD, **kwargs):
        kwargs.update(mask_token=True, fusion_ratio=None)
        super().__init__(*args, **kwargs)
        self.threshold = threshold
        streams = self.config["num_streams"]
        self.exchanges = []
        for i, (dim, blocks) in enumerate(zip(self.config["dims"], self.stages)):
            exchange = TokenExchange(dim, streams, threshold, name=f"exchange{i + 1}")
            self.exchanges.append(exchange)
            for block in blocks:
                block.token_mixer = exchange

    def build(self, input_shape):
        super().build(input_shape)
        for exchange, shape in zip(self.exchanges, super().compute_output_shape(input_shape)):
            exchange.build(shape)

    def call(self, x, training=None):
        for exchange in self.exchanges:
            exchange.mask_sums.clear()
        features = super().call(x, training=training)
        # Read within this call: no replica switch (merge_call) happens inside the encoder.
        mask_l1 = sum(s for exchange in self.exchanges for s in exchange.mask_sums)
        return {"features": features, "mask_l1": mask_l1}

    def compute_output_shape(self, input_shape):
        batch = input_shape[0] and input_shape[0] // self.config["num_streams"]
        return {"features": super().compute_output_shape(input_shape), "mask_l1": (batch,)}

    def get_config(self):
        config = super().get_config()
        for key in ("mask_token", "fusion_ratio"):
            config.pop(key)
        return {**config, "threshold": self.threshold}


def build_token_fusion(num_classes, modalities, *, variant="b0", decoder_dim=256,
                       threshold=THRESHOLD, l1_weight=L1_WEIGHT, freeze_bn=False,
                       drop_path_rate=None, ensemble="learned", xla_friendly=False,
                       features=(), name="token_fusion") -> keras.Model:
    """TokenFusion model: {modality: [B,H,W,C]} -> {"logits", "logits_<modality>", ...}.

    modalities: ordered {name: channels}, at least 2. Extra output "mask_l1" (per-sample
    mask sums) with `model.output_penalty_weights = {"mask_l1": l1_weight}`. xla_friendly:
    trace the op forms XLA:CPU runs fast (config key `xla`); the weights are the same.
    """
    config = mit_config(variant, drop_path_rate=drop_path_rate)

    def make_encoder(num_streams):
        return TokenFusionTransformer(**config, num_streams=num_streams, threshold=threshold,
                                      xla_friendly=xla_friendly, name="encoder")

    model = build_stream_model(num_classes, modalities, make_encoder, decoder_dim=decoder_dim,
                               freeze_bn=freeze_bn, ensemble=ensemble,
                               xla_friendly=xla_friendly, features=features,
                               model_name="TokenFusion", name=name)
    model.output_penalty_weights = {"mask_l1": l1_weight}
    return model


KEYS = {**SEGFORMER_KEYS, "ensemble": ENSEMBLE_KEY,
        "token_threshold": Key("float", THRESHOLD, "score below which a token is exchanged",
                               arg="threshold"),
        "mask_l1_weight": Key("float", L1_WEIGHT, "weight of the mask-score L1 penalty",
                              arg="l1_weight")}
register_model("tokenfusion", build_token_fusion, keys=KEYS, multimodal=True,
               built_features=("decoder",), core_args={"xla_friendly": "xla"})
