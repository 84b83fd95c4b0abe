"""SSMA: parameter count vs the original, fusion blocks, expert weight copy, N streams."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.models.adapnet_pp import build_adapnet_pp
from ssma_tf.models.ssma import build_ssma, ssma_block

TINY = dict(width=0.125, units=(1, 1, 1, 1))


def _inputs(channels, batch=2, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(batch, h, w, c)).astype("float32") for m, c in channels.items()}


def test_param_count_matches_original_at_12_classes():
    model = build_ssma(12, {"rgb": 3, "depth": 3})
    assert abs(model.count_params() - 56.44e6) / 56.44e6 < 0.01


def test_non_square_rgb_depth_gives_logits_only_by_default():
    channels = {"rgb": 3, "depth": 1}
    model = build_ssma(5, channels, **TINY)
    out = model(_inputs(channels), training=False)
    assert set(out) == {"logits"}
    assert tuple(out["logits"].shape) == (2, 64, 96, 5) and out["logits"].dtype == "float32"
    assert model.output_loss_weights == {"logits": 1.0}
    assert {"expert_rgb", "expert_depth", "skip1_attention_gate",
            "skip2_attention_gate"} <= {layer.name for layer in model.layers}


def test_aux_heads_are_optional():
    channels = {"rgb": 3, "depth": 1}
    model = build_ssma(5, channels, aux_heads=True, **TINY)
    out = model(_inputs(channels, h=32, w=32), training=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, 32, 32, 5) for k in ("logits", "aux1", "aux2")}
    assert model.output_loss_weights == {"logits": 1.0, "aux1": 0.6, "aux2": 0.5}


def test_ssma_block_shapes_follow_the_released_code():
    def block(c, n, eta, project_bn):
        streams = [keras.Input((None, None, c)) for _ in range(n)]
        out = ssma_block(streams, eta=eta, project_bn=project_bn, name="f")
        return keras.Model(streams, out), out

    model, out = block(256, 2, 16, True)          # eASPP level
    shapes = {layer.name: [tuple(w.shape) for w in layer.trainable_weights]
              for layer in model.layers}
    assert shapes["f_squeeze"] == [(3, 3, 512, 32), (32,)]
    assert shapes["f_excite"] == [(3, 3, 32, 512), (512,)]
    assert shapes["f_project"] == [(1, 1, 512, 256)] and "f_project_bn" in shapes
    assert out.shape[-1] == 256

    model, out = block(24, 2, 6, False)           # skip levels: 3x3 with bias, no BN
    shapes = {layer.name: [tuple(w.shape) for w in layer.trainable_weights]
              for layer in model.layers}
    assert shapes["f_squeeze"] == [(3, 3, 48, 8), (8,)]
    assert shapes["f_project"] == [(3, 3, 48, 24), (24,)] and "f_project_bn" not in shapes

    model, out = block(24, 3, 6, False)           # N streams: N*C -> N*C/eta -> N*C -> C
    shapes = {layer.name: [tuple(w.shape) for w in layer.trainable_weights]
              for layer in model.layers}
    assert shapes["f_excite"] == [(3, 3, 12, 72), (72,)] and out.shape[-1] == 24


def test_gate_is_a_sigmoid_of_the_concat():
    streams = [keras.Input((4, 4, 2)) for _ in range(2)]
    model = keras.Model(streams, ssma_block(streams, eta=2, project_bn=False, name="f"))
    excite = model.get_layer("f_excite")
    excite.kernel.assign(np.zeros(excite.kernel.shape))
    excite.bias.assign(np.full(excite.bias.shape, -100.0))    # gate closed -> projection bias
    project = model.get_layer("f_project")
    x = [np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")] * 2
    np.testing.assert_allclose(model(x), np.broadcast_to(project.bias, (1, 4, 4, 2)), atol=1e-6)


def test_three_modalities_fuse():
    channels = {"rgb": 3, "depth": 1, "hha": 3}
    model = build_ssma(4, channels, **TINY)
    logits = model(_inputs(channels, batch=1), training=False)["logits"]
    assert tuple(logits.shape) == (1, 64, 96, 4)
    assert model.get_layer("ssma_easpp_concat").output.shape[-1] == 3 * 32


def test_expert_weights_copy_from_adapnet_encoder():
    channels = {"rgb": 3, "depth": 1}
    ssma = build_ssma(5, channels, **TINY)
    unimodal = build_adapnet_pp(7, "depth", 1, dropout=0.7, **TINY)
    ssma.get_layer("expert_depth").set_weights(unimodal.get_layer("encoder").get_weights())
    depth = _inputs(channels)["depth"]
    got = ssma.get_layer("expert_depth")(depth, training=False)
    want = unimodal.get_layer("encoder")(depth, training=False)
    for level in ("skip1", "skip2", "easpp"):
        np.testing.assert_array_equal(got[level], want[level])


def test_needs_two_modalities():
    with pytest.raises(ConfigError, match="modalities"):
        build_ssma(3, {"rgb": 3}, **TINY)


def test_training_step_with_frozen_experts_only_moves_fusion_and_decoder():
    channels = {"rgb": 3, "depth": 1}
    model = build_ssma(4, channels, **TINY)
    for m in channels:
        model.get_layer(f"expert_{m}").trainable = False
    expert_before = [np.asarray(w).copy() for w in model.get_layer("expert_rgb").weights]
    fusion_before = np.asarray(model.get_layer("ssma_easpp_squeeze").kernel).copy()
    x = _inputs(channels, h=32, w=64)
    labels = np.random.default_rng(1).integers(0, 4, size=(2, 32, 64))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = ce(labels, model(x, training=True)["logits"])
    grads = tape.gradient(loss, model.trainable_variables)
    keras.optimizers.Adam(1e-3).apply_gradients(zip(grads, model.trainable_variables))
    assert np.isfinite(float(loss))
    for before, after in zip(expert_before, model.get_layer("expert_rgb").weights):
        np.testing.assert_array_equal(before, after)        # incl. BN moving statistics
    assert not np.allclose(fusion_before, model.get_layer("ssma_easpp_squeeze").kernel)


def test_clone_and_keras_file_round_trip(tmp_path):
    channels = {"rgb": 3, "depth": 1}
    model = build_ssma(3, channels, aux_heads=True, **TINY)
    x = _inputs(channels, batch=1, h=32, w=32)
    want = model(x, training=False)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    model.save(tmp_path / "ssma.keras")
    loaded = keras.models.load_model(tmp_path / "ssma.keras")
    for other in (clone, loaded):
        got = other(x, training=False)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-6)
