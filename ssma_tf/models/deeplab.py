"""DeepLab-v2 and DeepLab-v3+ on a ResNet-v1 backbone.

Contract (SSMA reuses the encoder per modality and fuses its outputs key by key):
- `build_deeplab_encoder(channels, version=...)`: keras.Model, [B,H,W,C] -> a dict:
  v2 {"features": P5 (2048 ch, 1/8)}; v3plus {"aspp": ASPP output (256 ch, 1/OS),
  "low_level": the 1x1 projection of P2 (48 ch, 1/4)}.
- `deeplab_decoder(features, reference, num_classes, version=...)` -> {"logits": float32
  at `reference`'s H x W}.
- `build_deeplab_v2` / `build_deeplab_v3plus`: {modality: image} -> encoder -> decoder.

DeepLab-v2 (s4GAN, DMT). Default backbone = the COCO
DeepLab-v2 file's layout: ResNet-101 with Caffe strides (`stride_in_1x1`), OS 8 with every
block of layer3 / layer4 at dilation 2 / 4 (`dilation_style="all"`), ceil-mode stem pool.
Head ("layer5", the ASPP-v2 classifier): four 3x3 convs 2048 -> C with bias at dilations
6/12/18/24, weights N(0, 0.01), biases 0, outputs summed. `aspp_v2_branches`:
- "code" (default): as the released s4GAN and DMT code, whose `forward` returns inside its
  loop: only the dilation-6 and -12 branches are summed. The 18/24 convs are still built
  (the COCO file holds them, weights load by name, the tensor count matches) but frozen:
  they get no gradient in PyTorch either, so SGD never touches them. The default because
  every published DeepLab-v2 semi-supervised number (s4GAN, DMT) was produced this way.
- "paper": the sum of all four branches (DeepLab-v2 paper), all trainable.
Weight import: the head's convs are `layer5_conv2d_list_{i}` (rule in resnet_v1.py), so
`resnet_v1.torch_key_to_keras` maps every key of `resnet101COCO-41f33a49.pth`.

DeepLab-v3+ (`head`; the encoder/decoder split is the same in all three):
- "standard" (default): UniMatch / ST++ (the decoder CPS uses too):
  ASPP of 1x1, three 3x3 atrous, image pooling (GAP, 1x1), each conv bias-free + BN + ReLU,
  concat (1280) -> 1x1 256 + BN + ReLU (-> dropout `dropout`, default 0: UniMatch has
  none); low-level 1x1 -> 48 + BN + ReLU; ASPP upsampled to the low-level size, concat
  [aspp, low_level] -> two 3x3 256 + BN + ReLU -> 1x1 classifier with bias. Default
  backbone: ResNet-101, deep stem, v1.5 strides, OS 16 (layer4 dilations 1, 2, 2), floor
  pool: 59.47 M parameters at 21 classes, as UniMatch's log (59.5 M; R50 40.5 M).
- "torchsemiseg": CPS / Mean Teacher's ASPP: concat of the 1x1 and three
  3x3 maps -> BN -> LeakyReLU(0.01) -> 1x1 256; image pooling GAP -> 1x1 256 -> BN ->
  LeakyReLU -> 1x1 256, added (not concatenated); then BN -> LeakyReLU. Decoder as
  "standard". (A reading of the facts; the order of the pool branch's BN/1x1 is
  inferred.) With `V3PLUS_PRESETS["torchsemiseg"]`: R50, OS 16, multi-grid (2, 4, 8).
- "u2pl": U2PL: ASPP concat [pool, 1x1, 3 atrous] (1280, no projection)
  -> 3x3 256 + BN + ReLU + Dropout2d(0.1) = "aspp"; low-level 1x1 -> **256** (with bias,
  as U2PL's 711-tensor snapshot implies) + BN + ReLU; decoder [3x3 256 with bias, BN, ReLU,
  Dropout2d 0.1] x 2 -> 1x1 classifier. U2PL returns logits at stride 4; this decoder,
  like the others, resizes them to the input. Not built: U2PL's representation head and
  its Cityscapes aux head on layer3.
ASPP rates default to (6, 12, 18) at OS 16 and (12, 24, 36) at OS 8 (`aspp_rates`).

Resizes are bilinear with `align_corners=True` (all four references); `align_corners=False`
uses half-pixel centres. BN: eps 1e-5, momentum 0.9 (PyTorch defaults). The heads use the
house He truncated-normal init (fan-in, as TorchSemiSeg's kaiming init), biases 0.01.
Input normalisation is not part of the model (COCO DeepLab-v2 weights expect BGR 0-255
minus (104.008, 116.669, 122.675); ImageNet ones RGB with ImageNet mean/std).
`V2_PRESETS` / `V3PLUS_PRESETS` hold the option sets that reproduce each reference.
"""

import keras
from keras import ops

from ssma_tf.errors import ConfigError
from ssma_tf.models.layers import (
    BroadcastLike,
    batch_norm,
    conv,
    float32_output,
    global_pool,
    scaled,
)
from ssma_tf.models.ops import bilinear_resize, resize_half_pixel
from ssma_tf.models.parts import ExpertParts
from ssma_tf.models.resnet_v1 import BN_EPSILON, BN_MOMENTUM, resnet_v1_features
from ssma_tf.registry import Key, register_model

VERSIONS = ("v2", "v3plus")
HEADS = ("standard", "torchsemiseg", "u2pl")
ASPP_V2_BRANCHES = ("code", "paper")
ASPP_V2_RATES = (6, 12, 18, 24)
LOW_LEVEL_CHANNELS = {"standard": 48, "torchsemiseg": 48, "u2pl": 256}
HEAD_DROPOUT = {"standard": 0.0, "torchsemiseg": 0.0, "u2pl": 0.1}
LEAKY_SLOPE = 0.01
ENCODER_HEAD_LAYERS = ("aspp", "low_level")    # in the encoder, but head parameters

BACKBONE_DEFAULTS = {
    "v2": {"depth": 101, "output_stride": 8, "deep_stem": False, "stride_in_1x1": True,
           "dilation_style": "all", "pool_ceil": True},
    "v3plus": {"depth": 101, "output_stride": 16, "deep_stem": True,
               "stride_in_1x1": False, "dilation_style": "torchvision", "pool_ceil": False},
}
BACKBONE_OPTIONS = frozenset({
    "depth", "units", "output_stride", "deep_stem", "stride_in_1x1", "dilation_style",
    "multi_grid", "pool_ceil", "zero_init_residual", "bn_affine_trainable", "width",
})
ENCODER_HEAD_OPTIONS = {"v2": frozenset(),
                        "v3plus": frozenset({"head", "aspp_rates", "low_level_channels",
                                             "dropout"})}
DECODER_OPTIONS = {"v2": frozenset({"aspp_v2_branches", "aspp_v2_rates", "align_corners"}),
                   "v3plus": frozenset({"head", "dropout", "width", "align_corners"})}

V2_PRESETS = {
    "s4gan": {"bn_affine_trainable": False},
    "dmt": {"stride_in_1x1": False, "dilation_style": "torchvision", "pool_ceil": False},
}
V3PLUS_PRESETS = {
    "unimatch": {},
    "u2pl": {"output_stride": 8, "multi_grid": (1, 2, 4), "pool_ceil": True,
             "zero_init_residual": True, "head": "u2pl"},
    "torchsemiseg": {"depth": 50, "multi_grid": (1, 2, 4), "head": "torchsemiseg"},
}


def _check(name, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {allowed}, got {value!r}")


def _bn(x, name):
    return batch_norm(name=name, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)(x)


def _conv_bn(x, filters, kernel_size, *, dilation=1, use_bias=False, act="relu", name):
    """conv -> BN (`<name>_bn`) -> ReLU / LeakyReLU / nothing."""
    x = _bn(conv(x, filters, kernel_size, dilation=dilation, use_bias=use_bias, name=name),
            f"{name}_bn")
    return _activation(x, act)


def _activation(x, act):
    if act == "relu":
        return keras.layers.ReLU()(x)
    if act == "leaky":
        return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE)(x)
    return x


def _dropout(x, rate, name):
    return keras.layers.SpatialDropout2D(rate, name=name)(x) if rate else x


@keras.saving.register_keras_serializable(package="ssma_tf")
class ResizeAligned(keras.layers.Layer):
    """Bilinearly resize `x` to `reference`'s H x W; align_corners=True as PyTorch's."""

    def __init__(self, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, x, reference):
        shape = ops.shape(reference)
        if not self.align_corners:
            return resize_half_pixel(x, (shape[1], shape[2]))
        return bilinear_resize(x, (shape[1], shape[2]), align_corners=True)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}


@keras.saving.register_keras_serializable(package="ssma_tf")
class ASPPV2(keras.layers.Layer):
    """DeepLab-v2 classifier: 3x3 convs to `num_classes` at `rates`, summed.

    `branches="code"` sums only the first two (the released code's early return); the
    others are built non-trainable so the weights match the released files.
    Sub-layers are `<name>_conv2d_list_{i}`.
    """

    def __init__(self, num_classes, rates=ASPP_V2_RATES, branches="code", **kwargs):
        super().__init__(**kwargs)
        _check("aspp_v2_branches", branches, ASPP_V2_BRANCHES)
        self.num_classes, self.rates, self.branches = int(num_classes), tuple(rates), branches
        self.convs = [
            keras.layers.Conv2D(
                self.num_classes, 3, dilation_rate=r, padding="same", use_bias=True,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                bias_initializer="zeros", name=f"{self.name}_conv2d_list_{i}")
            for i, r in enumerate(self.rates)
        ]
        for unused in self.convs[len(self.active):]:
            unused.trainable = False

    @property
    def active(self):
        """The convs whose outputs are summed."""
        return self.convs[:2] if self.branches == "code" else self.convs

    def build(self, input_shape):
        for layer in self.convs:
            layer.build(input_shape)

    def call(self, x):
        y = self.active[0](x)
        for layer in self.active[1:]:
            y = y + layer(x)
        return y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "rates": self.rates, "branches": self.branches}


def default_aspp_rates(output_stride):
    """(6, 12, 18) at OS 16, (12, 24, 36) at OS 8 (scaled as 6 * 16 / OS)."""
    return tuple(r * 16 // output_stride for r in (6, 12, 18))


def aspp(x, *, rates, head="standard", dropout=0.0, width=1.0, name="aspp"):
    """DeepLab-v3 ASPP on the backbone output (see the module docstring per `head`)."""
    c = scaled(256, width)
    if head == "torchsemiseg":
        maps = [conv(x, c, 1, name=f"{name}_conv0")]
        maps += [conv(x, c, 3, dilation=r, name=f"{name}_conv{i}")
                 for i, r in enumerate(rates, 1)]
        y = keras.layers.Concatenate(name=f"{name}_concat")(maps)
        y = _activation(_bn(y, f"{name}_maps_bn"), "leaky")
        y = conv(y, c, 1, name=f"{name}_project")
        pooled = _conv_bn(global_pool(x), c, 1, act="leaky", name=f"{name}_pool")
        pooled = conv(pooled, c, 1, name=f"{name}_pool_project")
        y = keras.layers.Add(name=f"{name}_add")(
            [y, BroadcastLike(name=f"{name}_pool_broadcast")(pooled, y)])
        y = _activation(_bn(y, f"{name}_project_bn"), "leaky")
        return _dropout(y, dropout, f"{name}_dropout")
    pooled = _conv_bn(global_pool(x), c, 1, name=f"{name}_pool")
    pooled = BroadcastLike(name=f"{name}_pool_broadcast")(pooled, x)
    branches = [_conv_bn(x, c, 1, name=f"{name}_conv0")]
    branches += [_conv_bn(x, c, 3, dilation=r, name=f"{name}_conv{i}")
                 for i, r in enumerate(rates, 1)]
    branches = [pooled, *branches] if head == "u2pl" else [*branches, pooled]
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    if head == "u2pl":
        y = _conv_bn(y, c, 3, name=f"{name}_head")
    else:
        y = _conv_bn(y, c, 1, name=f"{name}_project")
    return _dropout(y, dropout, f"{name}_dropout")


def _v3plus_head(pyramid, *, output_stride, head="standard", aspp_rates=None,
                 low_level_channels=None, dropout=None, width=1.0):
    _check("head", head, HEADS)
    rates = tuple(aspp_rates) if aspp_rates is not None else default_aspp_rates(output_stride)
    if dropout is None:
        dropout = HEAD_DROPOUT[head]
    low_channels = (LOW_LEVEL_CHANNELS[head] if low_level_channels is None
                    else int(low_level_channels))
    low = _conv_bn(pyramid["P2"], scaled(low_channels, width), 1, use_bias=head == "u2pl",
                   name="low_level")
    return {"aspp": aspp(pyramid["P5"], rates=rates, head=head, dropout=dropout,
                         width=width),
            "low_level": low}


def _split(options, keys, what):
    unknown = sorted(set(options) - keys)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; expected some of "
                          f"{sorted(keys)}")


def build_deeplab_encoder(channels, *, version, backbone=None, name="encoder",
                          **options) -> keras.Model:
    """Backbone (+ ASPP and low-level projection for v3plus) as a keras.Model.

    [B,H,W,channels] -> v2 {"features": P5}; v3plus {"aspp", "low_level"}.
    `backbone`: a callable (image tensor) -> {"P2", ..., "P5"}; default
    `resnet_v1_features` with BACKBONE_DEFAULTS[version] updated by the backbone options
    (which then must not be given). v3plus options: head, aspp_rates, low_level_channels,
    dropout, width; `output_stride` (default the version's) sets the default ASPP rates.
    """
    _check("version", version, VERSIONS)
    head_keys = ENCODER_HEAD_OPTIONS[version]
    _split(options, BACKBONE_OPTIONS | head_keys, f"build_deeplab_encoder({version!r})")
    backbone_options = {k: v for k, v in options.items() if k in BACKBONE_OPTIONS}
    head_options = {k: v for k, v in options.items() if k in head_keys}
    resnet_options = {**BACKBONE_DEFAULTS[version], **backbone_options}
    if backbone is None:
        def backbone(image):
            return resnet_v1_features(image, **resnet_options)
    elif set(backbone_options) - {"width", "output_stride"}:
        raise ConfigError(f"backbone options {sorted(backbone_options)} only apply to the "
                          "default ResNet, not to a given backbone")
    image = keras.Input((None, None, channels), name=f"{name}_input")
    pyramid = backbone(image)
    if version == "v2":
        outputs = {"features": pyramid["P5"]}
    else:
        outputs = _v3plus_head(pyramid, output_stride=resnet_options["output_stride"],
                               width=resnet_options.get("width", 1.0), **head_options)
    return keras.Model(image, outputs, name=name)


def deeplab_decoder(features, reference, num_classes, *, version, fused=False,
                    aspp_v2_branches="code", aspp_v2_rates=ASPP_V2_RATES, head="standard",
                    dropout=None, width=1.0, align_corners=True):
    """Encoder features (or SSMA's fused ones, same keys) -> {"logits"} at `reference`'s size.

    v2: ASPP-v2 classifier ("layer5") on "features". v3plus: upsample "aspp" to
    "low_level", concat, two 3x3 convs, 1x1 classifier. `fused` changes nothing for
    DeepLab (kept for the SSMA contract).
    """
    del fused
    _check("version", version, VERSIONS)
    if version == "v2":
        logits = ASPPV2(num_classes, aspp_v2_rates, aspp_v2_branches,
                        name="layer5")(features["features"])
    else:
        _check("head", head, HEADS)
        if dropout is None:
            dropout = HEAD_DROPOUT[head]
        c = scaled(256, width)
        low = features["low_level"]
        up = ResizeAligned(align_corners, name="aspp_upsample")(features["aspp"], low)
        y = keras.layers.Concatenate(name="decoder_concat")([up, low])
        u2pl = head == "u2pl"
        for i in (1, 2):
            y = _conv_bn(y, c, 3, use_bias=u2pl, name=f"decoder_conv{i}")
            y = _dropout(y, dropout if u2pl else 0.0, f"decoder_dropout{i}")
        logits = conv(y, num_classes, 1, use_bias=True, name="classifier")
    logits = ResizeAligned(align_corners, name="logits_resize")(logits, reference)
    return {"logits": float32_output(logits, "logits")}


def _build(version, num_classes, modality, channels, name, options):
    decoder_keys = DECODER_OPTIONS[version]
    encoder_keys = BACKBONE_OPTIONS | ENCODER_HEAD_OPTIONS[version] | {"backbone"}
    _split(options, encoder_keys | decoder_keys, f"build_deeplab_{version}")
    image = keras.Input((None, None, channels), name=modality)
    encoder = build_deeplab_encoder(
        channels, version=version, name="encoder",
        **{k: v for k, v in options.items() if k in encoder_keys})
    outputs = deeplab_decoder(encoder(image), image, num_classes, version=version,
                              **{k: v for k, v in options.items() if k in decoder_keys})
    model = keras.Model({modality: image}, outputs, name=name)
    model.output_loss_weights = {"logits": 1.0}
    model.encoder_head_prefixes = ENCODER_HEAD_LAYERS   # train with the decoder
    return model


def build_deeplab_v2(num_classes, modality="rgb", channels=3, *, name="deeplab_v2",
                     **options) -> keras.Model:
    """Unimodal DeepLab-v2: {modality: [B,H,W,C]} -> {"logits": [B,H,W,num_classes]}.

    Options: the backbone's (BACKBONE_DEFAULTS["v2"]: R101, Caffe strides, OS 8, "all"
    dilations, ceil pool), `backbone`, `aspp_v2_branches` ("code"), `aspp_v2_rates`,
    `align_corners` (True). V2_PRESETS["s4gan"] / ["dmt"] reproduce those references.
    """
    return _build("v2", num_classes, modality, channels, name, options)


def build_deeplab_v3plus(num_classes, modality="rgb", channels=3, *, name="deeplab_v3plus",
                         **options) -> keras.Model:
    """Unimodal DeepLab-v3+: {modality: [B,H,W,C]} -> {"logits": [B,H,W,num_classes]}.

    Options: the backbone's (BACKBONE_DEFAULTS["v3plus"]: R101 deep stem, v1.5, OS 16),
    `backbone`, `head` ("standard"), `aspp_rates` (by OS), `low_level_channels` (48),
    `dropout` (by head), `width`, `align_corners` (True). V3PLUS_PRESETS holds UniMatch,
    U2PL and TorchSemiSeg.
    """
    return _build("v3plus", num_classes, modality, channels, name, options)


def _backbone_options(backbone):
    """Encoder options for a chosen backbone (a factory Component): its builder, and the
    output stride and width the head follows when the backbone has them."""
    keep = {k: backbone.options[k] for k in ("output_stride", "width") if k in backbone.options}
    return {"backbone": backbone.build, **keep}


def _registered(version):
    """The config-facing builder and expert parts of DeepLab `version`: the `backbone` key
    names a registered backbone; the other options as build_deeplab_<version> takes them."""
    encoder_keys = ENCODER_HEAD_OPTIONS[version]
    decoder_keys = DECODER_OPTIONS[version] - {"width"}

    def build(num_classes, modality, channels, *, backbone, **options):
        return _build(version, num_classes, modality, channels, f"deeplab_{version}",
                      {**options, **_backbone_options(backbone)})

    def build_encoder(channels, *, name, backbone, **options):
        return build_deeplab_encoder(channels, version=version, name=name, **options,
                                     **_backbone_options(backbone))

    def decode(features, reference, num_classes, *, fused, backbone, **options):
        return deeplab_decoder(features, reference, num_classes, version=version,
                               fused=fused, width=backbone.options.get("width", 1.0),
                               **options)

    parts = ExpertParts(build_encoder, decode, encoder_args=("backbone", *encoder_keys),
                        decoder_args=("backbone", *decoder_keys),
                        context="features" if version == "v2" else "aspp",
                        loss_weights=lambda outputs: {"logits": 1.0})
    return build, parts


def _resnet_defaults(version):
    """The version's ResNet defaults as key defaults (the config keys of resnet_v1)."""
    names = {"width": "width_multiplier"}
    return {names.get(k, k): v for k, v in BACKBONE_DEFAULTS[version].items() if k != "depth"}


BACKBONE_KEY = Key("str", "resnet101", "registered backbone: resnet50, resnet101, ...",
                   component="backbone")
ALIGN_KEY = Key("bool", True, "bilinear resizes with align_corners (as the references)",
                arg="align_corners")
V2_KEYS = {
    "backbone": BACKBONE_KEY,
    "aspp_v2_branches": Key("str", "code", "branches summed: code (the released s4GAN / DMT:"
                            " rates 6 and 12 only) or paper (all four)", ASPP_V2_BRANCHES),
    "aspp_v2_rates": Key("list", list(ASPP_V2_RATES), "ASPP-v2 dilation rates"),
    "align_corners": ALIGN_KEY,
}
V3PLUS_KEYS = {
    "backbone": BACKBONE_KEY,
    "head": Key("str", "standard", "standard (UniMatch, ST++), torchsemiseg (CPS, mean"
                " teacher) or u2pl", HEADS),
    "aspp_rates": Key("list", None, "ASPP dilation rates (default 6, 12, 18 at output stride"
                      " 16; 12, 24, 36 at 8)"),
    "low_level_channels": Key("int", None, "low-level projection channels (default 48; u2pl"
                              " 256)"),
    "head_dropout": Key("float", None, "dropout in the head (default 0; u2pl 0.1)",
                        arg="dropout", bounds=(0, 1)),
    "align_corners": ALIGN_KEY,
}
_build_v2, V2_PARTS = _registered("v2")
_build_v3plus, V3PLUS_PARTS = _registered("v3plus")
register_model("deeplabv2", _build_v2, keys=V2_KEYS, multimodal=False, expert=V2_PARTS,
               key_defaults=_resnet_defaults("v2"))
register_model("deeplabv3plus", _build_v3plus, keys=V3PLUS_KEYS, multimodal=False,
               expert=V3PLUS_PARTS, key_defaults=_resnet_defaults("v3plus"),
               features={"decoder": "decoder_conv2_bn"})
