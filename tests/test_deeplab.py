"""DeepLab-v2 / v3+ and their ResNet-v1: counts vs the references, shapes, options, training."""

import json
import math

import keras
import numpy as np
import pytest

from model_testing import run_under_jax
from ssma_tf.errors import ConfigError
from ssma_tf.models.deeplab import (
    ASPPV2,
    V2_PRESETS,
    V3PLUS_PRESETS,
    ResizeAligned,
    build_deeplab_encoder,
    build_deeplab_v2,
    build_deeplab_v3plus,
    deeplab_decoder,
)
from ssma_tf.models.resnet_v1 import resnet_v1_features, stage_plan, torch_key_to_keras

TINY = {"width": 0.125, "units": (1, 1, 1, 1)}


def _image(batch=2, h=33, w=47, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, h, w, channels)).astype("float32")


def _params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _by_path(model):
    """{"layer/variable": variable} over the model and its nested encoder."""
    return {"/".join(v.path.split("/")[-2:]): v for v in model.weights}


# ----------------------------------------------------------------------------- counts


def test_v3plus_parameter_counts_match_unimatch_at_21_classes():
    # UniMatch's log "Total params" 59.5 M (R101) / 40.5 M (R50) for the Pascal
    # config (nclass 21); backbone 42.62 M / 23.63 M + head 16.84 M. PyTorch counts
    # parameters only: Keras' trainable weights (BN moving statistics are buffers).
    for depth, total, backbone in ((101, 59.5e6, 42.62e6), (50, 40.5e6, 23.63e6)):
        model = build_deeplab_v3plus(21, depth=depth)
        trainable = _params(model.trainable_weights)
        assert abs(trainable - total) < 0.05e6, (depth, trainable)
        encoder = model.get_layer("encoder")
        resnet = _params(v for layer in encoder.layers
                         if layer.name.startswith(("conv1", "bn1", "layer"))
                         for v in layer.trainable_weights)
        assert abs(resnet - backbone) < 0.005e6, (depth, resnet)
        assert abs(trainable - resnet - 16.84e6) < 0.005e6
    assert trainable == 40_475_957        # the exact R50 count, for regressions


def _coco_deeplab_v2_table(num_classes=21):
    """(key, torch shape) of `resnet101COCO-41f33a49.pth` from the COCO file's table."""
    table = [("conv1.weight", (64, 3, 7, 7))]
    table += [(f"bn1.{v}", (64,)) for v in ("weight", "bias", "running_mean", "running_var")]

    def bn(prefix, c):
        return [(f"{prefix}.{v}", (c,)) for v in ("weight", "bias", "running_mean",
                                                  "running_var")]

    inplanes = 64
    for layer, (blocks, planes) in enumerate(zip((3, 4, 23, 3), (64, 128, 256, 512)), 1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            table += [(f"{p}.conv1.weight", (planes, inplanes, 1, 1)), *bn(f"{p}.bn1", planes),
                      (f"{p}.conv2.weight", (planes, planes, 3, 3)), *bn(f"{p}.bn2", planes),
                      (f"{p}.conv3.weight", (4 * planes, planes, 1, 1)),
                      *bn(f"{p}.bn3", 4 * planes)]
            if b == 0:   # all four layers project, layer1 too (64 -> 256)
                table += [(f"{p}.downsample.0.weight", (4 * planes, inplanes, 1, 1)),
                          *bn(f"{p}.downsample.1", 4 * planes)]
            inplanes = 4 * planes
    for i in range(4):
        table += [(f"layer5.conv2d_list.{i}.weight", (num_classes, 2048, 3, 3)),
                  (f"layer5.conv2d_list.{i}.bias", (num_classes,))]
    return table


def test_v2_variables_are_the_coco_files_tensors_name_for_name():
    table = _coco_deeplab_v2_table(21)
    assert len(table) == 528                      # the file's tensor count
    model = build_deeplab_v2(21)
    variables = _by_path(model)
    assert len(variables) == len(model.weights) == 528
    for key, shape in table:
        layer, var = torch_key_to_keras(key)
        keras_shape = tuple(variables[f"{layer}/{var}"].shape)
        expected = tuple(shape[i] for i in (2, 3, 1, 0)) if len(shape) == 4 else shape
        assert keras_shape == expected, key
    assert torch_key_to_keras("layer1.0.bn1.num_batches_tracked") is None
    assert torch_key_to_keras("layer3.0.downsample.1.running_var") == (
        "layer3_0_downsample_bn", "moving_variance")
    # "code": dilation-18/24 branches exist but get no update (PyTorch: no gradient).
    frozen = {v.path for v in model.non_trainable_weights if v.path.startswith("layer5")}
    assert frozen == {f"layer5/layer5_conv2d_list_{i}/{v}" for i in (2, 3)
                      for v in ("kernel", "bias")}
    per_branch = 2048 * 9 * 21 + 21
    assert _params(model.trainable_weights) == 42_500_160 + 2 * per_branch
    # torchvision R101 without fc = 42,500,160 (the backbone key set is the same)
    paper = build_deeplab_v2(21, aspp_v2_branches="paper")
    assert _params(paper.trainable_weights) == 42_500_160 + 4 * per_branch


def test_u2pl_preset_variables_match_u2pl_snapshot_count():
    # U2PL's model state has 711 tensors at 21 classes: 636 encoder
    # (106 of them num_batches_tracked) + the decoder. Without num_batches_tracked (one
    # per BN: 106 + 11 in the decoder) and the 14 tensors of the representation head
    # (not built here) that leaves 580; bias on low_conv and both classifier 3x3 convs.
    model = build_deeplab_v3plus(21, **V3PLUS_PRESETS["u2pl"])
    bns = [layer for layer in model.get_layer("encoder").layers + model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 106 + 9                       # 11 decoder BNs minus the 2 of `rep`
    assert len(model.weights) == 711 - (106 + 11) - 14
    encoder = model.get_layer("encoder")
    assert encoder.get_layer("conv1_0").kernel.shape == (3, 3, 3, 64)
    assert encoder.get_layer("bn1").gamma.shape == (128,)
    assert encoder.get_layer("layer1_0_downsample_conv").kernel.shape == (1, 1, 128, 256)
    assert encoder.get_layer("low_level").bias is not None
    assert [encoder.get_layer(f"layer4_{b}_conv2").dilation_rate for b in range(3)] == [
        (4, 4), (8, 8), (16, 16)]


# ----------------------------------------------------------------------------- backbone


def test_stage_plan_reproduces_each_references_dilations():
    r101 = (3, 4, 23, 3)
    caffe = stage_plan(r101, 8, dilation_style="all")          # s4GAN / COCO file
    assert [s for s, _ in caffe] == [1, 2, 1, 1]
    assert set(caffe[2][1]) == {2} and set(caffe[3][1]) == {4}
    tv = stage_plan(r101, 8)                                   # DMT, U2PL layer3
    assert tv[2][1][:2] == (1, 2) and tv[3][1] == (2, 4, 4)
    assert stage_plan(r101, 8, multi_grid=(1, 2, 4))[3][1] == (4, 8, 16)      # U2PL
    assert stage_plan(r101, 16)[3] == (1, (1, 2, 2))                          # UniMatch
    assert stage_plan((3, 4, 6, 3), 16, multi_grid=(1, 2, 4))[3] == (1, (2, 4, 8))  # CPS
    assert [s for s, _ in stage_plan(r101, 32)] == [1, 2, 2, 2]
    with pytest.raises(ConfigError, match="output_stride"):
        stage_plan(r101, 4)
    with pytest.raises(ConfigError, match="multi_grid"):
        stage_plan(r101, 16, multi_grid=(1, 2))


def _out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _expected_sizes(n, output_stride, pool_ceil):
    """PyTorch's sizes of P2..P5 along one axis."""
    n = _out(n, 3, 2, 1)                                   # = 7x7/2/3 and deep stem 3x3/2/1
    n = math.ceil((n - 1) / 2) + 1 if pool_ceil else _out(n, 3, 2, 1)
    sizes = [n]
    for stage in (3, 4, 5):
        if 4 * 2 ** (stage - 2) <= output_stride:
            n = _out(n, 1, 2, 0)
        sizes.append(n)
    return sizes


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("pool_ceil", [False, True])
def test_pyramid_sizes_and_channels_follow_pytorch(output_stride, pool_ceil):
    image = keras.Input((None, None, 3))
    features = resnet_v1_features(image, output_stride=output_stride, pool_ceil=pool_ceil,
                                  **TINY)
    model = keras.Model(image, features)
    assert list(features) == ["P2", "P3", "P4", "P5"]
    for h, w in ((33, 47), (64, 96)):
        out = model(_image(1, h, w), training=False)
        hs, ws = _expected_sizes(h, output_stride, pool_ceil), _expected_sizes(
            w, output_stride, pool_ceil)
        for k, (eh, ew, c) in enumerate(zip(hs, ws, (32, 64, 128, 256))):
            assert tuple(out[f"P{k + 2}"].shape) == (1, eh, ew, c)
    if not pool_ceil:   # floor mode: P2 = 1/4 exactly on 64 x 96
        assert tuple(out["P2"].shape[1:3]) == (16, 24)
        assert out["P5"].shape[1] == 64 // output_stride
    else:               # ceil mode on even sizes: 32 -> 17 (PyTorch ceil_mode)
        assert out["P2"].shape[1] == 17


def test_ceil_mode_pool_matches_a_numpy_reference():
    image = keras.Input((None, None, 3))
    features = resnet_v1_features(image, pool_ceil=True, **TINY)
    model = keras.Model(image, features)
    stem = keras.Model(model.input, model.get_layer("bn1").output)
    pool = keras.Model(model.input, model.get_layer("maxpool").output)
    x = _image(1, 64, 94)
    relu = np.maximum(np.asarray(stem(x, training=False)), 0)
    got = np.asarray(pool(x, training=False))
    h, w = relu.shape[1:3]
    oh, ow = math.ceil((h - 1) / 2) + 1, math.ceil((w - 1) / 2) + 1
    padded = np.full((1, h + 3, w + 3, relu.shape[3]), -np.inf, "float32")
    padded[:, 1:h + 1, 1:w + 1] = relu
    want = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                               for j in range(ow)], 1) for i in range(oh)], 1)
    assert got.shape == want.shape == (1, 17, 24, 8)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_stride_placement_and_explicit_padding():
    def encoder(**kw):
        return build_deeplab_encoder(3, version="v2", **TINY, **kw)

    caffe, v15 = encoder(), encoder(stride_in_1x1=False)
    assert caffe.get_layer("layer2_0_conv1").strides == (2, 2)
    assert caffe.get_layer("layer2_0_conv2").strides == (1, 1)
    assert v15.get_layer("layer2_0_conv1").strides == (1, 1)
    assert v15.get_layer("layer2_0_conv2").strides == (2, 2)
    assert v15.get_layer("layer2_0_conv2").padding == "valid"     # ZeroPadding2D(1) before
    assert v15.get_layer("layer2_0_conv2_pad").padding == ((1, 1), (1, 1))
    assert caffe.get_layer("conv1").padding == "valid"
    assert caffe.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    assert caffe.get_layer("layer3_0_conv2").dilation_rate == (2, 2)   # "all" dilations
    assert caffe.get_layer("layer4_0_conv2").dilation_rate == (4, 4)
    bns = [layer for layer in caffe.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)


def test_deep_stem_on_and_off():
    plain = build_deeplab_encoder(3, version="v3plus", deep_stem=False, **TINY)
    deep = build_deeplab_encoder(3, version="v3plus", **TINY)        # v3plus default: on
    names = {layer.name for layer in deep.layers}
    assert {"conv1_0", "conv1_1", "conv1_3", "conv1_4", "conv1_6", "bn1"} <= names
    assert "conv1" not in names and "conv1" in {layer.name for layer in plain.layers}
    assert plain.get_layer("conv1").kernel.shape == (7, 7, 3, 8)
    assert deep.get_layer("conv1_6").kernel.shape == (3, 3, 8, 16)  # 128 * 0.125 into layer1
    assert deep.get_layer("layer1_0_conv1").kernel.shape == (1, 1, 16, 8)
    x = _image()
    for enc in (plain, deep):
        out = enc(x, training=False)
        assert tuple(out["low_level"].shape) == (2, 9, 12, 6)  # 48 * 0.125 at 1/4
        assert tuple(out["aspp"].shape) == (2, 3, 3, 32)       # 256 * 0.125 at 1/16


def test_frozen_bn_affine_and_zero_init_residual():
    model = build_deeplab_v2(3, **TINY, **V2_PRESETS["s4gan"])
    encoder = model.get_layer("encoder")
    bn = encoder.get_layer("layer1_0_bn1")
    assert not bn.gamma.trainable and not bn.beta.trainable
    assert not [v for v in model.trainable_weights if "bn" in v.path]
    before = np.asarray(bn.moving_mean).copy()
    model({"rgb": _image()}, training=True)           # moving statistics still update
    assert not np.allclose(before, np.asarray(bn.moving_mean))
    zero = build_deeplab_encoder(3, version="v3plus", zero_init_residual=True, **TINY)
    assert np.all(np.asarray(zero.get_layer("layer1_0_bn3").gamma) == 0)
    assert np.all(np.asarray(zero.get_layer("layer1_0_bn2").gamma) == 1)


# ----------------------------------------------------------------------------- heads


def test_aspp_v2_code_sums_two_branches_and_paper_four():
    features = _image(2, 5, 7, 16, seed=3)
    code, paper = ASPPV2(4, branches="code", name="code"), ASPPV2(4, branches="paper")
    code.build(features.shape)
    paper.build(features.shape)
    paper.set_weights(code.get_weights())
    branches = [np.asarray(c(features)) for c in code.convs]
    np.testing.assert_allclose(np.asarray(code(features)), branches[0] + branches[1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(paper(features)), sum(branches),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(code(features), paper(features))
    assert [c.dilation_rate[0] for c in code.convs] == [6, 12, 18, 24]
    assert [c.name for c in code.convs] == [f"code_conv2d_list_{i}" for i in range(4)]
    assert len(code.trainable_weights) == 4 and len(paper.trainable_weights) == 8
    kernel = np.asarray(code.convs[0].kernel)
    assert abs(kernel.std() - 0.01) < 0.001 and np.all(np.asarray(code.convs[0].bias) == 0)
    clone = ASPPV2.from_config(code.get_config())
    assert clone.branches == "code" and clone.rates == (6, 12, 18, 24)

    full = build_deeplab_v2(4, **TINY)
    assert full.get_layer("layer5").branches == "code"            # the default
    with pytest.raises(ConfigError, match="aspp_v2_branches"):
        build_deeplab_v2(4, aspp_v2_branches="all", **TINY)


def test_v3plus_heads_rates_and_channels():
    std = build_deeplab_encoder(3, version="v3plus", **TINY)
    assert [std.get_layer(f"aspp_conv{i}").dilation_rate[0] for i in (1, 2, 3)] == [6, 12, 18]
    assert std.get_layer("aspp_project").kernel.shape == (1, 1, 160, 32)   # 5 x 32 -> 32
    assert not any(isinstance(layer, keras.layers.SpatialDropout2D) for layer in std.layers)
    os8 = build_deeplab_encoder(3, version="v3plus", output_stride=8, **TINY)
    assert [os8.get_layer(f"aspp_conv{i}").dilation_rate[0] for i in (1, 2, 3)] == [12, 24, 36]
    u2pl = build_deeplab_encoder(3, version="v3plus", head="u2pl", **TINY)
    assert u2pl.get_layer("aspp_head").kernel.shape == (3, 3, 160, 32)     # no 1x1 projection
    assert u2pl.get_layer("aspp_dropout").rate == 0.1
    assert u2pl.get_layer("low_level").kernel.shape[-1] == 32              # 256 * 0.125
    tss = build_deeplab_encoder(3, version="v3plus", head="torchsemiseg", **TINY)
    assert tss.get_layer("aspp_project").kernel.shape == (1, 1, 128, 32)   # 4 maps, pool added
    assert tss.get_layer("aspp_pool_project").kernel.shape == (1, 1, 32, 32)
    assert any(isinstance(layer, keras.layers.LeakyReLU) for layer in tss.layers)
    x = _image(1, 64, 96)
    for enc in (std, u2pl, tss):
        out = enc(x, training=False)
        assert tuple(out["aspp"].shape) == (1, 4, 6, 32)
    custom = build_deeplab_encoder(3, version="v3plus", aspp_rates=(1, 2, 3),
                                   low_level_channels=64, **TINY)
    assert custom.get_layer("aspp_conv3").dilation_rate == (3, 3)
    assert custom.get_layer("low_level").kernel.shape[-1] == 8


def test_encoder_outputs_and_pluggable_backbone():
    v2 = build_deeplab_encoder(3, version="v2", **TINY)
    out = v2(_image(), training=False)
    assert list(out) == ["features"] and tuple(out["features"].shape) == (2, 5, 7, 256)
    assert v2.name == "encoder"

    calls = []

    def backbone(image):     # any callable returning the pyramid plugs in
        calls.append(image)
        p2 = keras.layers.Conv2D(8, 3, strides=4, padding="same")(image)
        return {"P2": p2, "P5": keras.layers.Conv2D(16, 3, strides=4, padding="same")(p2)}

    enc = build_deeplab_encoder(4, version="v3plus", backbone=backbone, width=0.25,
                                name="expert_depth")
    out = enc(_image(1, 64, 96, channels=4), training=False)
    assert len(calls) == 1 and enc.name == "expert_depth"
    assert tuple(out["aspp"].shape) == (1, 4, 6, 64) and tuple(out["low_level"].shape) == (
        1, 16, 24, 12)
    with pytest.raises(ConfigError, match="only apply to the default ResNet"):
        build_deeplab_encoder(3, version="v3plus", backbone=backbone, depth=50)
    with pytest.raises(ConfigError, match="aspp_v2_branches"):
        build_deeplab_encoder(3, version="v3plus", aspp_v2_branches="code")
    with pytest.raises(ConfigError, match="version"):
        build_deeplab_encoder(3, version="v3")


def test_decoder_on_fused_features_as_ssma_would_call_it():
    inputs = {m: keras.Input((None, None, c), name=m) for m, c in (("rgb", 3), ("depth", 1))}
    experts = [build_deeplab_encoder(c, version="v3plus", name=f"expert_{m}", **TINY)(x)
               for (m, x), c in zip(inputs.items(), (3, 1))]
    fused = {k: keras.layers.Average(name=f"fuse_{k}")([e[k] for e in experts])
             for k in experts[0]}
    outputs = deeplab_decoder(fused, inputs["rgb"], 5, version="v3plus", fused=True,
                              width=0.125)
    model = keras.Model(inputs, outputs)
    out = model({"rgb": _image(2, 33, 47), "depth": _image(2, 33, 47, 1)}, training=False)
    assert list(out) == ["logits"]
    assert tuple(out["logits"].shape) == (2, 33, 47, 5) and out["logits"].dtype == "float32"


def test_builders_outputs_and_alignment():
    for build, kw in ((build_deeplab_v2, {}), (build_deeplab_v3plus, {}),
                      (build_deeplab_v3plus, {"head": "u2pl", "output_stride": 8}),
                      (build_deeplab_v3plus, {"head": "torchsemiseg"})):
        model = build(5, "hha", **TINY, **kw)
        assert list(model.input) == ["hha"] and model.output_loss_weights == {"logits": 1.0}
        assert isinstance(model.get_layer("encoder"), keras.Model)
        for h, w in ((33, 47), (64, 96)):
            logits = model({"hha": _image(1, h, w)}, training=False)["logits"]
            assert tuple(logits.shape) == (1, h, w, 5) and logits.dtype == "float32"
    # align_corners=True: output (i, j) samples input (i * 4 / 32, j * 6 / 46) of a 5 x 7
    small = _image(1, 5, 7, 2, seed=4)
    big = np.asarray(ResizeAligned()(small, np.zeros((1, 33, 47, 1), "float32")))
    for (i, j), (si, sj) in (((0, 0), (0, 0)), ((32, 46), (4, 6)), ((8, 23), (1, 3))):
        np.testing.assert_allclose(big[0, i, j], small[0, si, sj], rtol=1e-5)
    half = np.asarray(ResizeAligned(False)(small, np.zeros((1, 33, 47, 1), "float32")))
    assert not np.allclose(half[0, 8, 23], small[0, 1, 3])     # half-pixel: row 0.79
    with pytest.raises(ConfigError, match="unknown option"):
        build_deeplab_v2(5, head="u2pl", **TINY)
    with pytest.raises(ConfigError, match="head"):
        build_deeplab_v3plus(5, head="deeplab", **TINY)


def test_tiny_v3plus_trains_and_loss_falls():
    model = build_deeplab_v3plus(3, **TINY)
    rng = np.random.default_rng(5)
    x = {"rgb": rng.normal(size=(4, 32, 32, 3)).astype("float32")}
    blocks = rng.integers(0, 3, size=(4, 4, 4))        # 8x8-pixel blocks of random classes
    y = {"logits": np.kron(blocks, np.ones((8, 8), "int64")).astype("int32")}
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    history = model.fit(x, y, batch_size=4, epochs=12, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    assert history[-1] < 0.6 * history[0] and history[-1] == min(history), history


def test_xla_forward_and_unknown_size_tracing():
    import tensorflow as tf

    x = {"rgb": _image(1, 33, 47)}
    for build in (build_deeplab_v2, build_deeplab_v3plus):
        model = build(3, **TINY)
        eager = np.asarray(model(x, training=False)["logits"])
        xla = tf.function(lambda x, model=model: model(x, training=False), jit_compile=True)
        np.testing.assert_allclose(np.asarray(xla(x)["logits"]), eager, rtol=1e-4, atol=1e-5)
        graph = tf.function(lambda x, model=model: model(x, training=False))
        traced = graph.get_concrete_function({"rgb": tf.TensorSpec((None, None, None, 3))})
        assert traced.structured_outputs["logits"].shape.as_list() == [None, None, None, 3]


# ----------------------------------------------------------------------------- jax

JAX_SCRIPT = """
import json, sys
import numpy as np
import keras
from ssma_tf.models.deeplab import build_deeplab_v2, build_deeplab_v3plus
assert keras.backend.backend() == "jax", keras.backend.backend()
x = np.random.default_rng(0).normal(size=(1, 33, 47, 3)).astype("float32")
result = {}
for name, build in (("v2", build_deeplab_v2), ("v3plus", build_deeplab_v3plus)):
    model = build(5, width=0.125, units=(1, 1, 1, 1))
    model.load_weights(sys.argv[1] + f"/{name}.weights.h5")
    result[name] = np.asarray(model.predict({"rgb": x}, verbose=0)["logits"]).tolist()
print("LOGITS" + json.dumps(result))
"""


def test_builds_and_matches_tensorflow_under_jax(tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 33, 47, 3)).astype("float32")
    expected = {}
    for name, build in (("v2", build_deeplab_v2), ("v3plus", build_deeplab_v3plus)):
        model = build(5, **TINY)
        model.save_weights(str(tmp_path / f"{name}.weights.h5"))
        expected[name] = np.asarray(model({"rgb": x}, training=False)["logits"])
    stdout = run_under_jax(JAX_SCRIPT, str(tmp_path))
    line = next(line for line in stdout.splitlines() if line.startswith("LOGITS"))
    got = json.loads(line[len("LOGITS"):])
    for name, want in expected.items():
        assert np.asarray(got[name]).shape == (1, 33, 47, 5)
        np.testing.assert_allclose(np.asarray(got[name]), want, rtol=1e-4, atol=1e-4)


def test_the_aspp_and_low_level_projection_train_with_the_decoder_group():
    """UniMatch's and U2PL's parameter groups: the backbone at lr, the head at lr * lr_multi."""
    from ssma_tf.optim import split_variables

    model = build_deeplab_v3plus(3, width=0.0625, units=(1, 1, 1, 1))
    groups = split_variables(model)
    head = {v.path for v in groups["decoder"]}
    assert any("aspp" in p for p in head) and any("low_level" in p for p in head)
    assert not any("aspp" in v.path or "low_level" in v.path
                   for v in groups["encoder"] + groups["norm"])
    assert any(v.path.startswith("layer1") for v in groups["encoder"])
