"""AdapNet++: parameter count vs the original, shapes, options, init, one training step."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.models import layers
from ssma_tf.models.adapnet_pp import build_adapnet_pp, build_encoder
from ssma_tf.models.resnet import multiscale_rates

TINY = dict(width=0.125, units=(1, 1, 1, 1))


def _rgb(batch=2, h=64, w=96, seed=0):
    return {"rgb": np.random.default_rng(seed).normal(size=(batch, h, w, 3)).astype("float32")}


def test_param_count_matches_original_at_12_classes():
    model = build_adapnet_pp(12)
    assert abs(model.count_params() - 30.20e6) / 30.20e6 < 0.01
    easpp = sum(layer.count_params() for layer in model.get_layer("encoder").layers
                if layer.name.startswith("easpp"))
    assert abs(easpp - 2.04e6) / 2.04e6 < 0.01


def test_non_square_input_gives_outputs_at_input_resolution():
    model = build_adapnet_pp(5, **TINY)
    out = model(_rgb(), training=False)
    assert set(out) == {"logits", "aux1", "aux2"}
    for y in out.values():
        assert tuple(y.shape) == (2, 64, 96, 5) and y.dtype == "float32"
    assert model.output_loss_weights == {"logits": 1.0, "aux1": 0.6, "aux2": 0.5}
    assert list(model.input) == ["rgb"]


def test_encoder_pyramid_strides_and_channels():
    encoder = build_encoder(3, **TINY)
    f = encoder(_rgb()["rgb"])
    assert tuple(f["skip1"].shape) == (2, 16, 24, 3)    # 1/4, 24 * 0.125
    assert tuple(f["skip2"].shape) == (2, 8, 12, 3)     # 1/8
    assert tuple(f["easpp"].shape) == (2, 4, 6, 32)     # 1/16, 256 * 0.125


def test_without_aux_heads_only_logits_are_supervised():
    model = build_adapnet_pp(4, aux_heads=False, **TINY)
    assert set(model(_rgb(h=32, w=32), training=False)) == {"logits"}
    assert model.output_loss_weights == {"logits": 1.0}


def test_multiscale_rates_code_and_paper_presets():
    assert multiscale_rates(1, 2, "code") is None
    assert multiscale_rates(2, 4, "paper") == (1, 2)
    assert [multiscale_rates(3, k, "code") for k in (2, 3, 6)] == [None, (1, 2), (1, 2)]
    assert [multiscale_rates(3, k, "paper")[1] for k in (3, 4, 5, 6)] == [2, 4, 8, 16]
    assert [multiscale_rates(4, k, "paper") for k in (1, 2, 3)] == [(2, 4), (2, 8), (2, 16)]
    assert multiscale_rates(4, 3, "code") == (2, 2)

    code = build_encoder(3, width=0.125, units=(1, 1, 4, 2), rates="code")
    paper = build_encoder(3, width=0.125, units=(1, 1, 4, 2), rates="paper")
    assert code.get_layer("block3_unit4_conv2_b").dilation_rate == (2, 2)
    assert paper.get_layer("block3_unit4_conv2_b").dilation_rate == (4, 4)
    assert code.get_layer("block4_unit2_conv2").dilation_rate == (2, 2)   # (2,2): one conv
    assert paper.get_layer("block4_unit2_conv2_b").dilation_rate == (8, 8)
    halves = [paper.get_layer(f"block3_unit4_conv2_{h}").filters for h in "ab"]
    assert halves == [16, 16]                                           # 256 * 0.125 split
    assert code.count_params() == paper.count_params()


def test_dropout_only_on_last_unit_of_block4():
    encoder = build_encoder(3, width=0.125, units=(1, 1, 1, 3), dropout=0.5)
    drops = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Dropout)]
    assert [(d.name, d.rate) for d in drops] == [("block4_unit3_dropout", 0.5)]


def test_input_bn_is_optional():
    assert "input_bn" in [layer.name for layer in build_encoder(3, **TINY).layers]
    assert "input_bn" not in [layer.name
                              for layer in build_encoder(3, input_bn=False, **TINY).layers]


def test_bad_options_raise_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="rates"):
        build_adapnet_pp(3, rates="deeplab", **dict(TINY, units=(1, 1, 3, 1)))
    with pytest.raises(ConfigError, match="units"):
        build_adapnet_pp(3, width=0.125, units=(1, 1, 1))
    with pytest.raises(ConfigError, match="dropout"):
        build_adapnet_pp(3, dropout=1.0, **TINY)


def test_conv_init_is_truncated_he_and_bn_uses_house_defaults():
    model = build_adapnet_pp(5, **TINY)
    kernel = np.asarray(model.get_layer("dec1_conv1").kernel)       # 3x3, 35 -> 32
    std = math.sqrt(2.0 / (3 * 3 * kernel.shape[2]))
    assert np.abs(kernel).max() <= 2 * std + 1e-6
    assert 0.8 * std < kernel.std() < 0.95 * std                     # truncation shrinks it
    bns = [layer for layer in model.get_layer("encoder").layers + model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(b.momentum == 0.99 and b.epsilon == 1e-5 for b in bns)


def test_synchronize_batch_norm_reaches_nested_layers_and_is_read_at_call_time(monkeypatch):
    from keras.src.layers.normalization import batch_normalization

    model = build_adapnet_pp(3, **TINY)
    bns = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(b.synchronized for b in bns)
    assert not layers.batch_norm().synchronized
    assert layers.synchronize_batch_norm(model) is model
    assert all(b.synchronized for b in bns)
    encoder_bns = [layer for layer in model.get_layer("encoder").layers  # a nested model
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert encoder_bns and all(b.synchronized for b in encoder_bns)
    # Keras asks for synchronised moments at call time, so a built model picks it up
    seen = []
    moments = batch_normalization.ops.moments
    monkeypatch.setattr(batch_normalization.ops, "moments",
                        lambda *a, **k: seen.append(k.get("synchronized")) or moments(*a, **k))
    model({"rgb": np.zeros((1, 32, 32, 3), np.float32)}, training=True)
    assert seen and all(seen)


def test_one_training_step_updates_weights_and_bn_statistics():
    model = build_adapnet_pp(4, **TINY)
    x = _rgb(h=32, w=64)
    labels = np.random.default_rng(1).integers(0, 4, size=(2, 32, 64))
    optimizer = keras.optimizers.Adam(1e-3)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel_before = np.asarray(model.get_layer("dec1_conv1").kernel).copy()
    moving_before = np.asarray(model.get_layer("up1_bn").moving_mean).copy()

    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = sum(w * ce(y, out[k]) for k, w in model.output_loss_weights.items())
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    loss = float(step(x, labels))
    assert np.isfinite(loss) and loss > 0
    assert not np.allclose(kernel_before, np.asarray(model.get_layer("dec1_conv1").kernel))
    assert not np.allclose(moving_before, np.asarray(model.get_layer("up1_bn").moving_mean))


def test_forward_compiles_with_xla_at_static_size():
    model = build_adapnet_pp(3, aux_heads=True, **TINY)
    x = _rgb(batch=1, h=32, w=48)
    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    out = forward(x)
    eager = model(x, training=False)
    for k in out:
        assert out[k].shape == (1, 32, 48, 3)
        np.testing.assert_allclose(out[k], eager[k], rtol=1e-4, atol=1e-4)
