"""SSMA multimodal fusion (research/ssma.md §4).

One AdapNet++ encoder per modality ("expert_<modality>", the same architecture as
AdapNet++'s "encoder", so unimodal weights copy over with set_weights), an SSMA block at
each of the three levels (eASPP, skip2 at 1/8, skip1 at 1/4) and the AdapNet++ decoder
with skip attention. The original trains with frozen experts: set
`model.get_layer("expert_<m>").trainable = False` (its BNs then use moving statistics).
"""

import keras

from ssma_tf.errors import ConfigError
from ssma_tf.models.adapnet_pp import build_encoder, decoder, loss_weights
from ssma_tf.models.layers import conv, conv_bn


def ssma_block(streams, *, eta, project_bn, name):
    """Fuse N streams of C channels each into C channels.

    concat (N*C) -> 3x3 conv N*C/eta (bias) ReLU -> 3x3 conv N*C (bias) sigmoid -> gate the
    concat -> projection to C: 1x1 conv + BN (`project_bn`, eASPP level) or 3x3 conv with
    bias and no BN (skip levels), as the released code.
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


def build_ssma(num_classes, modalities, *, width=1.0, units=(3, 4, 6, 3), rates="code",
               easpp_rates=(3, 6, 12), eta=(16, 6), input_bn=True, dropout=0.0,
               aux_heads=False, name="ssma") -> keras.Model:
    """SSMA over `modalities` ({name: channels}, at least two, in fusion order).

    `eta`: (eASPP-level, skip-level) bottleneck reductions. `dropout` applies inside the
    experts (the original runs them with dropout off). Outputs {"logits"} (+ aux heads).
    """
    if len(modalities) < 2:
        raise ConfigError(f"modalities: SSMA fuses at least two, got {list(modalities)!r}")
    eta_easpp, eta_skip = eta
    inputs, features = {}, []
    for modality, channels in modalities.items():
        inputs[modality] = keras.Input((None, None, channels), name=modality)
        expert = build_encoder(channels, width=width, units=units, rates=rates,
                               easpp_rates=easpp_rates, input_bn=input_bn,
                               dropout=dropout, name=f"expert_{modality}")
        features.append(expert(inputs[modality]))

    def fuse(level, level_eta, project_bn):
        return ssma_block([f[level] for f in features], eta=level_eta,
                          project_bn=project_bn, name=f"ssma_{level}")

    reference = next(iter(inputs.values()))
    outputs = decoder(fuse("easpp", eta_easpp, True), fuse("skip1", eta_skip, False),
                      fuse("skip2", eta_skip, False), reference, num_classes,
                      width=width, aux_heads=aux_heads, skip_attention=True)
    model = keras.Model(inputs, outputs, name=name)
    model.output_loss_weights = loss_weights(outputs)
    return model
