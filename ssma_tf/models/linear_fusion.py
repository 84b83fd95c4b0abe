"""LinearFusion (M3L): one MiT shared by all modalities, fused inside every attention layer.

- One encoder: every conv and linear is shared by the modalities ("streams"); only the
  LayerNorms are per stream. The streams run stacked along the batch axis.
- In every attention layer of every block, after the output projection and before the
  residual add, stream s becomes ratio * a_s + (1 - ratio)/(S - 1) * each other stream
  (S = 2: a0' = r a0 + (1-r) a1, a1' = (1-r) a0 + r a1; r = 0.8).
- A 1-channel modality (depth) is tiled to 3 channels inside the model, as M3L replicates
  depth, so that it shares the patch conv with RGB. Every modality must have 1 channel
  or the widest channel count.
- Missing modality: a modality whose normalised input is all zeros for a sample has all
  its stage-1 tokens (after the patch conv and LayerNorm) replaced by one learned mask
  token (N(0,1) init). This is M3L's masking with masking_ratio 1.0 applied per sample,
  so training-time modality masking is just zeroing that modality's input. M3L also
  creates (never used) tokens for stages 2-4; they are left out here, as they would
  only receive no gradient.
- One shared Segformer decoder on each stream. Outputs: "logits_<modality>" per stream
  and the ensemble "logits" = sum_s softmax(alpha)_s * stop_gradient(stream s logits), so
  the ensemble's loss trains only alpha (one weight per stream, initialised equal).
  `ensemble: learned` (default) trains alpha, as that design implies; `ensemble: mean` is
  M3L's released code, whose alpha is in no optimizer group, so the ensemble stays the plain
  mean (built without alpha, so checkpoints from before the learned weights restore).
  When every stream fits the labeled batches, alpha barely moves, even where one stream
  alone is better on held-out images (docs/experiments.md §5); `eval_output: logits_depth`
  evaluates one stream.
  output_loss_weights = 1/(S+1) each (M3L averages the loss over the S+1 outputs). The
  stream-stacked decoder computes BN batch statistics over all streams together (M3L's
  config freezes that BN: `freeze_bn=True`).
- Decoder feature (`features=("decoder",)`, e.g. U2PL's representation head): output
  "feature_decoder" [B, H/4, W/4, decoder_dim] = sum_s w_s * (stream s's fused decoder map,
  after BN + ReLU, before the classifier), with the ensemble's weights w (softmax(alpha), or
  1/S for `ensemble: mean`) held constant: a loss on the feature trains the streams (decoder
  and encoder), not alpha.
"""

import keras
from keras import ops

from ssma_tf.errors import ConfigError
from ssma_tf.models.mit import MixTransformer, mit_config
from ssma_tf.models.segformer import KEYS as SEGFORMER_KEYS
from ssma_tf.models.segformer import ResizeToInput, SegformerHead
from ssma_tf.registry import Key, register_model


class StackStreams(keras.layers.Layer):
    """Tile 1-channel inputs to `channels` and stack the modalities along the batch axis."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, streams):
        tiled = [s if s.shape[-1] == self.channels else ops.repeat(s, self.channels, axis=-1)
                 for s in streams]
        return ops.concatenate(tiled, axis=0)

    def compute_output_shape(self, input_shapes):
        first = input_shapes[0]
        batch = None if first[0] is None else first[0] * len(input_shapes)
        return (batch, first[1], first[2], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


class SplitStreams(keras.layers.Layer):
    """Split stacked logits into the streams plus the ensemble: the streams' stop-gradient
    logits weighted by softmax(alpha), a trainable weight, when `learned`; their plain mean
    (no weight) otherwise. With a stacked `feature`, also returns (last) the streams'
    features weighted by the same, stop-gradient, weights."""

    def __init__(self, num_streams, learned=True, **kwargs):
        super().__init__(**kwargs)
        self.num_streams = num_streams
        self.learned = learned

    def build(self, input_shape):
        if self.learned:
            self.alpha = self.add_weight(shape=(self.num_streams,), initializer="ones",
                                         name="alpha")

    def stream_weights(self, dtype):
        """The ensemble's weight of each stream: softmax(alpha), or 1/S."""
        if self.learned:
            return ops.cast(ops.softmax(self.alpha), dtype)
        return [1.0 / self.num_streams] * self.num_streams

    def call(self, x, feature=None):
        streams = ops.split(x, self.num_streams, axis=0)
        weights = self.stream_weights(x.dtype)
        ensemble = sum(weights[s] * ops.stop_gradient(stream) for s, stream in enumerate(streams))
        if feature is None:
            return [ensemble] + streams
        weights = ops.stop_gradient(self.stream_weights(feature.dtype))
        combined = sum(weights[s] * stream for s, stream in
                       enumerate(ops.split(feature, self.num_streams, axis=0)))
        return [ensemble] + streams + [combined]

    def compute_output_shape(self, x_shape, feature_shape=None):
        def unstacked(shape):
            batch = None if shape[0] is None else shape[0] // self.num_streams
            return (batch,) + tuple(shape[1:])
        shapes = [unstacked(x_shape)] * (self.num_streams + 1)
        return shapes if feature_shape is None else shapes + [unstacked(feature_shape)]

    def get_config(self):
        return {**super().get_config(), "num_streams": self.num_streams,
                "learned": self.learned}


def build_stream_model(num_classes, modalities, make_encoder, *, decoder_dim=256,
                       freeze_bn=False, ensemble="learned", xla_friendly=False, features=(),
                       model_name="LinearFusion", name="linear_fusion"):
    """Stream-stacked fusion model around `make_encoder(num_streams)` (a MixTransformer).

    Shared by LinearFusion and TokenFusion: validates the modalities, tiles 1-channel ones,
    stacks the streams, runs the encoder and one shared Segformer decoder, and returns
    {"logits": the ensemble (`ensemble`: learned | mean), "logits_<modality>": per stream}
    with loss weights 1/(S+1) each. An encoder may return {"features": [c1..c4],
    name: tensor, ...}: the other entries become extra model outputs. model_name names the
    model in error messages; xla_friendly is the decoder's (give the encoder the same).
    features: ("decoder",) adds the output "feature_decoder" (the module docstring's rule).
    """
    modalities = dict(modalities)
    if len(modalities) < 2:
        raise ConfigError(f"modalities: {model_name} needs at least 2 modalities, "
                          f"got {list(modalities)}")
    channels = max(modalities.values())
    for modality, c in modalities.items():
        if c not in (1, channels):
            raise ConfigError(
                f"modalities: {modality!r} has {c} channels; {model_name} shares the patch conv, "
                f"so every modality needs 1 or {channels} channels"
            )
    num_streams = len(modalities)
    inputs = {m: keras.Input((None, None, c), name=m) for m, c in modalities.items()}
    stacked = StackStreams(channels, name="stack_streams")(list(inputs.values()))
    encoded = make_encoder(num_streams)(stacked)
    extra = {}
    if isinstance(encoded, dict):
        extra = dict(encoded)
        encoded = extra.pop("features")
    head = SegformerHead(num_classes, decoder_dim, freeze_bn=freeze_bn,
                         xla_friendly=xla_friendly, return_hidden="decoder" in features,
                         name="decoder")
    logits, hidden = head(encoded) if head.return_hidden else (head(encoded), None)
    logits = ResizeToInput(name="upsample")(logits, stacked)
    ensemble, *streams = SplitStreams(num_streams, learned=ensemble == "learned",
                                       name="split_streams")(logits, feature=hidden)
    if hidden is not None:
        extra["feature_decoder"] = streams.pop()
    outputs = {"logits": ensemble}
    outputs.update({f"logits_{m}": s for m, s in zip(modalities, streams)})
    model = keras.Model(inputs, {**outputs, **extra}, name=name)
    model.output_loss_weights = {key: 1.0 / (num_streams + 1) for key in outputs}
    return model


def build_linear_fusion(num_classes, modalities, *, variant="b0", ratio=0.8,
                        decoder_dim=256, freeze_bn=False, drop_path_rate=None,
                        ensemble="learned", xla_friendly=False, features=(),
                        name="linear_fusion") -> keras.Model:
    """LinearFusion model: {modality: [B,H,W,C]} -> {"logits", "logits_<modality>", ...}.

    modalities: ordered {name: channels}, at least 2. Layers "encoder" and "decoder" hold
    the parameter groups; LayerNorm variables have "norm" in their path. xla_friendly:
    trace the op forms XLA:CPU runs fast (config key `xla`); the weights are the same.
    features: ("decoder",) adds the output "feature_decoder".
    """
    config = mit_config(variant, drop_path_rate=drop_path_rate)

    def make_encoder(num_streams):
        return MixTransformer(**config, num_streams=num_streams, fusion_ratio=ratio,
                              mask_token=True, xla_friendly=xla_friendly, name="encoder")

    return build_stream_model(num_classes, modalities, make_encoder, decoder_dim=decoder_dim,
                              freeze_bn=freeze_bn, ensemble=ensemble,
                              xla_friendly=xla_friendly, features=features,
                              model_name="LinearFusion", name=name)


ENSEMBLE_KEY = Key("str", "learned", "ensemble output: learned (softmax(alpha)-weighted streams,"
                   " alpha trained) or mean (M3L's code)", ("learned", "mean"))
KEYS = {**SEGFORMER_KEYS, "ensemble": ENSEMBLE_KEY,
        "fusion_ratio": Key("float", 0.8, "share of each stream kept by the linear mixing",
                            arg="ratio", bounds=(0.0, 1.0))}
register_model("linearfusion", build_linear_fusion, keys=KEYS, multimodal=True,
               built_features=("decoder",), core_args={"xla_friendly": "xla"})
