"""MiT encoder: any H x W, stage strides, per-stream LayerNorm, DropPath, parameter counts."""

import keras
import numpy as np
import pytest

from ssma_tf.models.mit import DropPath, StreamLayerNorm, StreamMix, build_mit, mit_config


def _ceil_div(a, b):
    return -(-a // b)


@pytest.mark.parametrize("height,width", [(64, 128), (96, 64), (36, 50)])
def test_any_input_size_gives_ceil_stage_sizes(height, width):
    model = build_mit("tiny")
    out = model.predict({"rgb": np.random.rand(2, height, width, 3).astype("float32")}, verbose=0)
    h, w = height, width
    for i, (stride, dim) in enumerate(zip((4, 2, 2, 2), mit_config("tiny")["dims"])):
        h, w = _ceil_div(h, stride), _ceil_div(w, stride)
        assert out[f"c{i + 1}"].shape == (2, h, w, dim)
        assert np.isfinite(out[f"c{i + 1}"]).all()


def test_one_model_serves_several_sizes_and_540():
    model = build_mit("tiny", channels=1, modality="depth")
    shapes = {}
    for size in ((540, 540), (500, 500)):
        out = model({"depth": np.zeros((1, *size, 1), "float32")})
        shapes[size] = tuple(out["c4"].shape[1:3])
    assert shapes == {(540, 540): (17, 17), (500, 500): (16, 16)}


def test_encoder_parameter_counts_match_reference():
    # keras-hub's MiTBackbone B2 (same architecture, no head) has 24,196,288 parameters.
    assert build_mit("b2").count_params() == 24_196_288
    assert abs(build_mit("b0").count_params() - 3.32e6) < 0.01e6


def test_stream_layer_norm_matches_keras_and_is_per_stream():
    x = np.random.rand(4, 3, 5, 8).astype("float32")
    single = StreamLayerNorm(1)
    reference = keras.layers.LayerNormalization(epsilon=1e-6)
    np.testing.assert_allclose(single(x), reference(x), atol=1e-5)

    two = StreamLayerNorm(2)
    base = keras.ops.convert_to_numpy(two(x))
    two.gamma.assign(np.stack([np.ones(8), 2 * np.ones(8)]).astype("float32"))
    changed = keras.ops.convert_to_numpy(two(x))
    np.testing.assert_allclose(changed[:2], base[:2])  # stream 0 = rows 0..1
    np.testing.assert_allclose(changed[2:], 2 * base[2:], atol=1e-6)


def test_stream_mix_weights():
    x = np.stack([np.ones((2, 2, 1)), np.zeros((2, 2, 1)), 2 * np.ones((2, 2, 1))])
    mixed = keras.ops.convert_to_numpy(StreamMix(3, 0.8)(x.astype("float32")))
    np.testing.assert_allclose(mixed[:, 0, 0, 0], [0.8 + 0.2, 0.1 + 0.2, 1.6 + 0.1], atol=1e-6)


def test_drop_path_drops_whole_rows_only_in_training():
    x = np.ones((64, 2, 2, 3), "float32")
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_row = y.reshape(64, -1)
    assert set(np.unique(per_row)) <= {0.0, 2.0}
    assert (per_row.min(axis=1) == per_row.max(axis=1)).all()
    assert 0 < (per_row[:, 0] == 0).sum() < 64


def test_drop_path_rates_are_linspace():
    encoder = build_mit("b0").get_layer("encoder")
    rates = [block.drop_path.rate for stage in encoder.stages for block in stage]
    np.testing.assert_allclose(rates, np.linspace(0, 0.1, 8))


def test_unknown_variant_and_bad_override():
    with pytest.raises(ValueError, match="b9"):
        mit_config("b9")
    with pytest.raises(ValueError, match="depths"):
        mit_config("b0", depths=(1, 1))


def test_depthwise_as_shifts_equals_depthwise_conv_and_gelu_is_exact():
    from ssma_tf.models.mit import depthwise3x3_as_shifts, gelu

    x = np.random.normal(size=(2, 7, 9, 5)).astype("float32")
    conv = keras.layers.DepthwiseConv2D(3, padding="same", bias_initializer="random_normal")
    expected = keras.ops.convert_to_numpy(conv(x))
    got = keras.ops.convert_to_numpy(depthwise3x3_as_shifts(x, conv.kernel, conv.bias))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    reference = keras.activations.gelu(x, approximate=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gelu(x)), reference, atol=1e-6)
