"""Segformer: output shapes, PyTorch-style bilinear resize, folded decoder == plain decoder,
frozen BN (learning is tested on LinearFusion, which uses the same parts)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

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

    levels = []
    for i, feature in enumerate(features):
        y = feature @ keras.ops.convert_to_numpy(head.linear_kernels[i])
        y = y + keras.ops.convert_to_numpy(head.linear_biases[i])
        levels.append(keras.ops.convert_to_numpy(bilinear_resize(y, sizes[0])))
    fused = np.concatenate(levels[::-1], axis=-1) @ keras.ops.convert_to_numpy(head.fuse_kernel)
    x = keras.ops.relu(head.bn(fused, training=False))
    expected = keras.ops.convert_to_numpy(head.classifier(x))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_running_stats(freeze_bn):
    model = build_segformer(3, variant="tiny", decoder_dim=8, freeze_bn=freeze_bn)
    model({"rgb": np.random.rand(2, 32, 32, 3).astype("float32")}, training=True)
    moving_mean = keras.ops.convert_to_numpy(model.get_layer("decoder").bn.moving_mean)
    assert (np.all(moving_mean == 0)) == freeze_bn

