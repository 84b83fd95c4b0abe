"""AdapNet++ (Valada et al., IJCV 2019): ResNet-50 encoder, eASPP, skip taps, decoder.

The encoder (stem + ResNet + skip taps + eASPP) is a nested keras.Model named "encoder"
returning {"skip1": 1/4, "skip2": 1/8, "easpp": 1/16}; SSMA reuses it as its experts.
Inputs need H and W divisible by 16.
"""

import keras

from ssma_tf.models.layers import (
    BroadcastLike,
    ResizeLike,
    conv_bn,
    float32_output,
    global_pool,
    scaled,
    upconv_bn,
)
from ssma_tf.models.parts import ExpertParts
from ssma_tf.models.resnet import resnet50_features
from ssma_tf.registry import Key, register_model

SKIP_CHANNELS = 24
AUX_WEIGHTS = {"aux1": 0.6, "aux2": 0.5}


def easpp(x, *, width=1.0, rates=(3, 6, 12), name="easpp"):
    """Efficient ASPP: 1x1 branch, three cascaded-atrous branches, image pooling.

    Each atrous branch: 1x1 -> 64, two 3x3 dilated -> 64, 1x1 -> 256 (all BN-ReLU).
    Concat -> 1x1 -> 256 + BN, no ReLU. 2.04 M parameters at width 1.
    """
    c256, c64 = scaled(256, width), scaled(64, width)
    branches = [conv_bn(x, c256, 1, name=f"{name}_1x1")]
    for r in rates:
        y = conv_bn(x, c64, 1, name=f"{name}_r{r}_reduce")
        y = conv_bn(y, c64, 3, dilation=r, name=f"{name}_r{r}_atrous1")
        y = conv_bn(y, c64, 3, dilation=r, name=f"{name}_r{r}_atrous2")
        branches.append(conv_bn(y, c256, 1, name=f"{name}_r{r}_expand"))
    pooled = conv_bn(global_pool(x), c256, 1, name=f"{name}_pool")
    branches.append(BroadcastLike(name=f"{name}_pool_broadcast")(pooled, x))
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    return conv_bn(y, c256, 1, relu=False, name=f"{name}_project")


def skip_tap(x, *, width=1.0, name):
    """1x1 conv -> 24 + BN, no ReLU."""
    return conv_bn(x, scaled(SKIP_CHANNELS, width), 1, relu=False, name=name)


def build_encoder(channels=3, *, width=1.0, units=(3, 4, 6, 3), rates="code",
                  easpp_rates=(3, 6, 12), input_bn=True, dropout=0.7,
                  name="encoder") -> keras.Model:
    """Stem + pre-act ResNet-50 + skip taps + eASPP -> {"skip1", "skip2", "easpp"}."""
    image = keras.Input((None, None, channels), name=f"{name}_input")
    f = resnet50_features(image, width=width, units=units, rates=rates,
                          dropout=dropout, input_bn=input_bn)
    outputs = {
        "skip1": skip_tap(f["block1"], width=width, name="skip1"),
        "skip2": skip_tap(f["block2"], width=width, name="skip2"),
        "easpp": easpp(f["block4"], width=width, rates=easpp_rates),
    }
    return keras.Model(image, outputs, name=name)


def _aux_head(x, num_classes, reference, name):
    """1x1 conv -> C + BN on a decoder stage, bilinearly resized to input size."""
    y = conv_bn(x, num_classes, 1, relu=False, name=f"{name}_conv")
    return float32_output(ResizeLike(name=f"{name}_resize")(y, reference), name)


def _skip_attention(up, skip, width, name):
    """SSMA skip re-weighting: GAP(up) -> 1x1 -> 24 BN ReLU, times the fused skip."""
    g = conv_bn(global_pool(up), scaled(SKIP_CHANNELS, width), 1, name=name)
    return keras.layers.Multiply(name=f"{name}_gate")([BroadcastLike()(g, skip), skip])


def decoder(easpp_out, skip1, skip2, reference, num_classes, *, width=1.0,
            aux_heads=True, skip_attention=False):
    """AdapNet++ decoder; returns {"logits"[, "aux1", "aux2"]} at `reference`'s size.

    up1 (4x4/2 transposed + BN) ++ skip2 -> two 3x3 BN-ReLU -> up2 (4x4/2 + BN) ++ skip1
    -> two 3x3 BN-ReLU -> 1x1 -> C BN ReLU -> 8x8/4 transposed + BN = logits.
    `skip_attention` (SSMA) re-weights the skips by the upsampled features' GAP.
    """
    c256 = scaled(256, width)
    up1 = upconv_bn(easpp_out, c256, 4, 2, name="up1")
    if skip_attention:
        skip2 = _skip_attention(up1, skip2, width, name="skip2_attention")
    x = keras.layers.Concatenate(name="up1_concat")([up1, skip2])
    x = conv_bn(x, c256, 3, name="dec1_conv1")
    x = conv_bn(x, c256, 3, name="dec1_conv2")
    up2 = upconv_bn(x, c256, 4, 2, name="up2")
    if skip_attention:
        skip1 = _skip_attention(up2, skip1, width, name="skip1_attention")
    x = keras.layers.Concatenate(name="up2_concat")([up2, skip1])
    x = conv_bn(x, c256, 3, name="dec2_conv1")
    x = conv_bn(x, c256, 3, name="dec2_conv2")
    x = conv_bn(x, num_classes, 1, name="pre_logits")  # ReLU on pre-logits, as the code
    outputs = {"logits": float32_output(upconv_bn(x, num_classes, 8, 4, name="up3"), "logits")}
    if aux_heads:
        outputs["aux1"] = _aux_head(up2, num_classes, reference, "aux1")
        outputs["aux2"] = _aux_head(up1, num_classes, reference, "aux2")
    return outputs


def decode(features, reference, num_classes, *, fused=False, width=1.0, aux_heads=True):
    """The decoder on the encoder's {"skip1", "skip2", "easpp"}; `fused` (SSMA) adds the skip
    attention."""
    return decoder(features["easpp"], features["skip1"], features["skip2"], reference,
                   num_classes, width=width, aux_heads=aux_heads, skip_attention=fused)


def loss_weights(outputs) -> dict:
    """Supervised loss weights for a decoder's outputs (main 1, aux 0.6 / 0.5)."""
    return {"logits": 1.0, **{k: w for k, w in AUX_WEIGHTS.items() if k in outputs}}


def build_adapnet_pp(num_classes, modality="rgb", channels=3, *, width=1.0,
                     units=(3, 4, 6, 3), rates="code", easpp_rates=(3, 6, 12),
                     aux_heads=True, input_bn=True, dropout=0.7,
                     name="adapnet_pp") -> keras.Model:
    """Unimodal AdapNet++; input {modality: [B,H,W,channels]}, H and W divisible by 16."""
    image = keras.Input((None, None, channels), name=modality)
    encoder = build_encoder(channels, width=width, units=units, rates=rates,
                            easpp_rates=easpp_rates, input_bn=input_bn, dropout=dropout)
    outputs = decode(encoder(image), image, num_classes, width=width, aux_heads=aux_heads)
    model = keras.Model({modality: image}, outputs, name=name)
    model.output_loss_weights = loss_weights(outputs)
    return model


KEYS = {
    "width_multiplier": Key("float", 1.0, "channel width multiplier", arg="width"),
    "backbone_units": Key("list", [3, 4, 6, 3], "residual units per ResNet stage", arg="units"),
    "rates": Key("str", "code", "dilation rates of the last stages: the released code's or the"
                 " paper's", ("code", "paper")),
    "easpp_rates": Key("list", [3, 6, 12], "eASPP dilation rates"),
    "aux_loss": Key("bool", True, "auxiliary heads in the loss", arg="aux_heads"),
    "dropout": Key("float", 0.7, "drop rate in block 4's last unit (original keep_prob 0.3)",
                   bounds=(0.0, 0.99)),
    "input_bn": Key("bool", True, "BatchNorm on the raw input, as the released code"),
}
ADAPNET_PARTS = ExpertParts(
    build_encoder, decode, context="easpp", loss_weights=loss_weights,
    encoder_args=("width", "units", "rates", "easpp_rates", "input_bn", "dropout"),
    decoder_args=("width", "aux_heads"))
register_model("AdapNet_pp", build_adapnet_pp, keys=KEYS, multimodal=False, crop_multiple=16,
               features={"decoder": "dec2_conv2_bn"}, expert=ADAPNET_PARTS)
