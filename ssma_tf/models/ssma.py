"""SSMA multimodal fusion (Valada et al., IJCV 2019) over any expert model.

One encoder per modality ("expert_<modality>", the expert model's own encoder, so a
unimodal stage-1 model's "encoder" weights copy over), an SSMA block on each of the
encoder's named features, and the expert model's decoder on the fused features. The expert
is any registered model with `expert=ExpertParts(...)` (ssma_tf/models/parts.py): AdapNet++
(the paper's; fused levels eASPP, skip2 at 1/8, skip1 at 1/4), DeepLab-v2, DeepLab-v3+...
The recipe: stage 1 trains the experts alone; stage "fusion" copies them in and freezes
them (their BNs then use moving statistics); stage "finetune" trains everything.
"""

import keras

from ssma_tf.errors import ConfigError
from ssma_tf.models.adapnet_pp import ADAPNET_PARTS
from ssma_tf.models.layers import conv, conv_bn
from ssma_tf.registry import Key, register_model

STAGES = ("expert", "fusion", "finetune")


def ssma_block(streams, *, eta, project_bn, name):
    """Fuse N streams of C channels each into C channels.

    concat (N*C) -> 3x3 conv N*C/eta (bias) ReLU -> 3x3 conv N*C (bias) sigmoid -> gate the
    concat -> projection to C: 1x1 conv + BN (`project_bn`, the context level) or 3x3 conv
    with bias and no BN (skip levels), as the released code.
    """
    channels = streams[0].shape[-1]
    x = keras.layers.Concatenate(name=f"{name}_concat")(streams)
    total = x.shape[-1]
    s = conv(x, max(1, total // eta), 3, use_bias=True, name=f"{name}_squeeze")
    s = keras.layers.ReLU()(s)
    s = conv(s, total, 3, use_bias=True, name=f"{name}_excite")
    s = keras.layers.Activation("sigmoid")(s)
    x = keras.layers.Multiply(name=f"{name}_gate")([s, x])
    if project_bn:
        return conv_bn(x, channels, 1, relu=False, name=f"{name}_project")
    return conv(x, channels, 3, use_bias=True, name=f"{name}_project")


def freeze_expert_encoders(model):
    """Make every nested `expert_*` encoder non-trainable (its BN then runs in inference)."""
    for layer in model.layers:
        if layer.name.startswith("expert_"):
            layer.trainable = False


def build_ssma(num_classes, modalities, *, parts=ADAPNET_PARTS, eta=(16, 6), dropout=0.0,
               aux_heads=False, name="ssma", **options) -> keras.Model:
    """SSMA over `modalities` ({name: channels}, at least two, in fusion order).

    `parts`: the expert model's ExpertParts (default AdapNet++'s); `options`: that model's
    builder options (split into encoder and decoder options). `eta`: (context-level,
    skip-level) bottleneck reductions. `dropout` applies inside the experts (the original
    runs them with dropout off). Outputs {"logits"} (+ the decoder's aux heads).
    """
    if len(modalities) < 2:
        raise ConfigError(f"modalities: SSMA fuses at least two, got {list(modalities)!r}")
    if "dropout" in parts.encoder_args:
        options["dropout"] = dropout
    if "aux_heads" in parts.decoder_args:
        options["aux_heads"] = aux_heads
    encoder_options, decoder_options = parts.split(options)
    eta_context, eta_skip = eta
    inputs, features = {}, []
    for modality, channels in modalities.items():
        inputs[modality] = keras.Input((None, None, channels), name=modality)
        expert = parts.build_encoder(channels, name=f"expert_{modality}", **encoder_options)
        features.append(expert(inputs[modality]))
    levels = [parts.context] + sorted(k for k in features[0] if k != parts.context)
    fused = {}
    for level in levels:
        context = level == parts.context
        fused[level] = ssma_block([f[level] for f in features],
                                  eta=eta_context if context else eta_skip,
                                  project_bn=context, name=f"ssma_{level}")
    reference = next(iter(inputs.values()))
    outputs = parts.decode(fused, reference, num_classes, fused=True, **decoder_options)
    model = keras.Model(inputs, outputs, name=name)
    model.output_loss_weights = parts.loss_weights(outputs)
    return model


def build_ssma_model(num_classes, modalities, *, expert, stage="fusion", freeze_experts=None,
                     eta=(16, 6)):
    """SSMA from the config: `expert` is the chosen expert model (a factory Component);
    the experts are frozen when `freeze_experts`, by default in stage fusion."""
    model = build_ssma(num_classes, modalities, parts=expert.entry.expert, eta=tuple(eta),
                       **expert.options)
    if freeze_experts if freeze_experts is not None else stage == "fusion":
        freeze_expert_encoders(model)
    return model


def initialises_experts(config):
    """Whether a fresh run copies stage-1 experts in (stage fusion)."""
    return config.stage == "fusion"


KEYS = {
    "expert": Key("str", "AdapNet_pp", "the expert model (any registered model with expert"
                  " parts: AdapNet_pp, deeplabv2, deeplabv3plus, ...)", component="model"),
    "stage": Key("str", "fusion", "recipe stage: expert (stage 1 is the unimodal model), fusion"
                 " (experts copied from checkpoint1.. and frozen), finetune (all trained)",
                 STAGES),
    "freeze_experts": Key("bool", None, "freeze the experts (default: true in stage fusion)"),
    "eta": Key("list", [16, 6], "SSMA bottleneck reductions: (context level, skip levels)"),
    "checkpoint1": Key("path", None, "stage-1 expert checkpoint for the first modality"),
    "checkpoint2": Key("path", None, "stage-1 expert checkpoint for the second modality"),
}
register_model(
    "SSMA", build_ssma_model, keys=KEYS, multimodal=True, recipe_keys=("checkpoint1",
                                                                      "checkpoint2"),
    key_defaults={"dropout": 0.0, "aux_loss": False}, initialises_experts=initialises_experts,
    features_from="expert")
