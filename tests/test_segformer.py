"""Segformer: output shapes, PyTorch-style bilinear resize, folded decoder == plain decoder,
the decoder feature, frozen BN (learning is tested on LinearFusion, which uses the same
parts)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_testing import textbook_fused_map
from ssma_tf.models.ops import bilinear_resize, resize_half_pixel
from ssma_tf.models.segformer import SegformerHead, build_segformer


@pytest.mark.parametrize("height,width", [(64, 128), (96, 64), (50, 70)])
def test_output_shapes(height, width):
    model = build_segformer(7, variant="tiny", decoder_dim=16)
    out = model.predict({"rgb": np.random.rand(2, height, width, 3).astype("float32")}, verbose=0)
    assert set(out) == {"logits"} and model.output_loss_weights == {"logits": 1.0}
    assert out["logits"].shape == (2, height, width, 7) and out["logits"].dtype == np.float32


def test_other_modality_and_decoder_dim():
    model = build_segformer(3, "depth", 1, variant="tiny", decoder_dim=24)
    assert model.get_layer("decoder").fuse_kernel.shape == (96, 24)
    out = model({"depth": np.random.rand(1, 32, 64, 1).astype("float32")})
    assert out["logits"].shape == (1, 32, 64, 3)


def test_bilinear_resize_matches_tf():
    x = np.random.rand(2, 5, 7, 3).astype("float32")
    half_pixel = bilinear_resize(x, (20, 14), align_corners=False)
    np.testing.assert_allclose(half_pixel, tf.image.resize(x, (20, 14)), atol=1e-5)
    corners = bilinear_resize(x, (17, 25), align_corners=True)
    expected = tf.compat.v1.image.resize(x, (17, 25), align_corners=True)
    np.testing.assert_allclose(corners, expected, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(corners)[:, -1, -1], x[:, -1, -1],
                               atol=1e-6)
    # the head's fast path (native op for static sizes) is the same half-pixel resize
    np.testing.assert_allclose(resize_half_pixel(x, (20, 14)), half_pixel, atol=1e-5)
    np.testing.assert_allclose(resize_half_pixel(x, (20, 14), xla_friendly=True), half_pixel,
                               atol=1e-5)


def test_folded_decoder_equals_plain_decoder():
    """Dense per level -> resize -> concat [c4..c1] -> 1x1 conv, computed the textbook way."""
    dims, sizes, dim = (8, 16, 24, 32), ((12, 16), (6, 8), (3, 4), (2, 2)), 10
    features = [np.random.rand(2, h, w, c).astype("float32") for (h, w), c in zip(sizes, dims)]
    head = SegformerHead(4, dim)
    got = keras.ops.convert_to_numpy(head(features, training=False))

    x = textbook_fused_map(head, [keras.ops.convert_to_tensor(f) for f in features])
    expected = keras.ops.convert_to_numpy(head.classifier(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_decoder_feature_is_the_fused_map_before_the_classifier():
    plain = build_segformer(7, variant="tiny", decoder_dim=16)
    model = build_segformer(7, variant="tiny", decoder_dim=16, features=("decoder",))
    assert [v.path for v in model.weights] == [v.path for v in plain.weights]
    model.set_weights(plain.get_weights())
    head = model.get_layer("decoder")       # BN statistics away from 0/1: the fold shows
    head.bn.moving_mean.assign(np.linspace(-0.5, 0.5, 16).astype("float32"))
    head.bn.moving_variance.assign(np.linspace(0.5, 2.0, 16).astype("float32"))
    plain.get_layer("decoder").set_weights(head.get_weights())
    x = {"rgb": np.random.default_rng(1).normal(size=(2, 40, 56, 3)).astype("float32")}
    out = model(x, training=False)
    assert set(out) == {"logits", "feature_decoder"}
    assert tuple(out["feature_decoder"].shape) == (2, 10, 14, 16)
    encoder = keras.Model(model.input, model.get_layer("encoder").output)
    expected = textbook_fused_map(head, encoder(x, training=False))
    np.testing.assert_allclose(out["feature_decoder"], expected, rtol=1e-4, atol=1e-4)
    assert np.mean(expected == 0) > 0.1                                  # after the ReLU
    np.testing.assert_allclose(out["logits"], plain(x, training=False)["logits"], atol=1e-5)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_running_stats(freeze_bn):
    model = build_segformer(3, variant="tiny", decoder_dim=8, freeze_bn=freeze_bn)
    model({"rgb": np.random.rand(2, 32, 32, 3).astype("float32")}, training=True)
    moving_mean = keras.ops.convert_to_numpy(model.get_layer("decoder").bn.moving_mean)
    assert (np.all(moving_mean == 0)) == freeze_bn

