"""LinearFusion: outputs, ensemble (learned / mean), the decoder feature, mask token, fusion,
depth tiling, parameter counts, learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_testing import predict_numpy, rgbd_inputs, textbook_fused_map
from ssma_tf.errors import ConfigError
from ssma_tf.models.linear_fusion import build_linear_fusion

MODALITIES = {"rgb": 3, "depth": 1}


def _tiny(**kwargs):
    return build_linear_fusion(5, MODALITIES, variant="tiny", decoder_dim=16, **kwargs)


def test_outputs_shapes_and_loss_weights():
    model = _tiny()
    out = predict_numpy(model, rgbd_inputs(3))
    assert set(out) == {"logits", "logits_rgb", "logits_depth"}
    assert all(v.shape == (3, 64, 96, 5) and v.dtype == np.float32 for v in out.values())
    assert model.output_loss_weights == pytest.approx(
        {"logits": 1 / 3, "logits_rgb": 1 / 3, "logits_depth": 1 / 3})


@pytest.mark.parametrize("ensemble", ["learned", "mean"])
def test_ensemble_starts_as_the_mean_and_trains_only_alpha(ensemble):
    model = _tiny(ensemble=ensemble)
    inputs = rgbd_inputs(2)
    out = predict_numpy(model, inputs)
    np.testing.assert_allclose(out["logits"], (out["logits_rgb"] + out["logits_depth"]) / 2,
                               atol=1e-6)
    alpha = [v.path for v in model.get_layer("split_streams").weights]
    assert alpha == (["split_streams/alpha"] if ensemble == "learned" else [])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(inputs, training=False)["logits"])
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables)))
    assert [path for path, g in grads.items() if g is not None] == alpha


@pytest.mark.parametrize("ensemble, weights", [("learned", (0.25, 0.75)), ("mean", (0.5, 0.5))])
def test_decoder_feature_weights_the_streams_fused_maps_as_the_ensemble(ensemble, weights):
    model = _tiny(ensemble=ensemble, features=("decoder",))
    assert [v.path for v in model.weights] == [v.path for v in _tiny(ensemble=ensemble).weights]
    if ensemble == "learned":
        model.get_layer("split_streams").alpha.assign([0.0, np.log(3.0)])
    inputs = rgbd_inputs(2, 32, 48)
    out = predict_numpy(model, inputs)
    assert out["feature_decoder"].shape == (2, 8, 12, 16)
    encoder = keras.Model(model.input, model.get_layer("encoder").output)
    stacked = textbook_fused_map(model.get_layer("decoder"), encoder(inputs, training=False))
    expected = weights[0] * stacked[:2] + weights[1] * stacked[2:]      # [rgb ; depth] rows
    np.testing.assert_allclose(out["feature_decoder"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["logits"], weights[0] * out["logits_rgb"]
                               + weights[1] * out["logits_depth"], atol=1e-5)


def test_a_loss_on_the_decoder_feature_trains_the_streams_not_alpha():
    model = _tiny(features=("decoder",))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(rgbd_inputs(1, 32, 48), training=True)["feature_decoder"])
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables)))
    assert grads["split_streams/alpha"] is None
    assert grads["decoder/fuse_kernel"] is not None
    assert grads["decoder/classifier/kernel"] is None                 # before the classifier
    assert all(g is not None for path, g in grads.items() if "patch_embed1" in path)


def test_learned_ensemble_weights_the_stream_that_fits_the_labels():
    model = _tiny()
    inputs = rgbd_inputs(2)
    labels = np.argmax(predict_numpy(model, inputs)["logits_depth"], axis=-1)
    alpha = model.get_layer("split_streams").alpha
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(1.0)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=False)["logits"])
        optimizer.apply([tape.gradient(loss, alpha)], [alpha])
        losses.append(float(loss))
    weights = tf.nn.softmax(alpha).numpy()
    assert weights[1] > 0.6 and losses[-1] < losses[0]          # depth, the second stream


def test_mask_token_only_affects_samples_with_all_zero_depth():
    model = _tiny()
    inputs = rgbd_inputs(3)
    inputs["depth"][1] = 0.0  # sample 1: depth missing
    inputs["depth"][2, :10] = 0.0  # sample 2: holes only, not missing
    before = predict_numpy(model, inputs)
    token = model.get_layer("encoder").mask_token
    token.assign(np.random.default_rng(1).normal(size=token.shape).astype("float32"))
    after = predict_numpy(model, inputs)
    for key in before:
        np.testing.assert_allclose(after[key][[0, 2]], before[key][[0, 2]], atol=1e-6)
        assert np.abs(after[key][1] - before[key][1]).max() > 1e-3


def test_zeroed_rgb_changes_only_that_sample_and_reaches_depth_stream():
    model = _tiny()
    inputs = rgbd_inputs(2)
    masked = {k: v.copy() for k, v in inputs.items()}
    masked["rgb"][0] = 0.0
    a, b = predict_numpy(model, inputs), predict_numpy(model, masked)
    np.testing.assert_allclose(a["logits"][1], b["logits"][1], atol=1e-6)
    assert np.abs(a["logits_depth"][0] - b["logits_depth"][0]).max() > 1e-4  # via fusion


@pytest.mark.parametrize("ratio,coupled", [(1.0, False), (0.8, True)])
def test_fusion_couples_streams(ratio, coupled):
    model = _tiny(ratio=ratio)
    inputs = rgbd_inputs(2)
    other = dict(inputs, depth=inputs["depth"][::-1].copy())
    a, b = predict_numpy(model, inputs), predict_numpy(model, other)
    changed = np.abs(a["logits_rgb"] - b["logits_rgb"]).max()
    assert (changed > 1e-4) == coupled


def test_depth_is_tiled_to_three_channels():
    one = _tiny()
    three = build_linear_fusion(5, {"rgb": 3, "depth": 3}, variant="tiny", decoder_dim=16)
    three.set_weights(one.get_weights())
    inputs = rgbd_inputs(2, height=32, width=32)
    tiled = dict(inputs, depth=np.repeat(inputs["depth"], 3, axis=-1))
    np.testing.assert_allclose(predict_numpy(one, inputs)["logits"],
                               predict_numpy(three, tiled)["logits"], atol=1e-5)


def test_three_modalities_and_bad_channels():
    model = build_linear_fusion(4, {"rgb": 3, "depth": 1, "hha": 3}, variant="tiny",
                                decoder_dim=8)
    inputs = dict(rgbd_inputs(1, height=32, width=64),
                  hha=np.random.rand(1, 32, 64, 3).astype("float32"))
    out = predict_numpy(model, inputs)
    assert set(out) == {"logits", "logits_rgb", "logits_depth", "logits_hha"}
    assert model.output_loss_weights["logits_hha"] == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="'ir' has 2 channels"):
        build_linear_fusion(4, {"rgb": 3, "ir": 2})
    with pytest.raises(ConfigError, match="at least 2"):
        build_linear_fusion(4, {"rgb": 3})


@pytest.mark.parametrize("variant,original", [("b0", 3_724_655), ("b2", 24_751_439)])
def test_parameter_count_matches_original(variant, original):
    """Original (PyTorch, 13 classes, its alpha(2) counted though never trained) = ours
    less the stage-1 mask token."""
    model = build_linear_fusion(13, MODALITIES, variant=variant)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    token = model.get_layer("encoder").mask_token.shape[0]
    assert trainable - token == original
    assert abs(trainable - original) / original < 0.01


def test_learns_a_tiny_batch():
    model = _tiny(drop_path_rate=0.0)
    inputs = rgbd_inputs(2, height=32, width=32)
    labels = (inputs["depth"][..., 0] > 0.5).astype("int32") + (inputs["rgb"][..., 0] > 0)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            loss = sum(w * loss_fn(labels, out[k]) for k, w in model.output_loss_weights.items())
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(
            (g, v) for g, v in zip(grads, model.trainable_variables) if g is not None)
        return loss

    losses = [float(step()) for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("jit", [False, True])
def test_xla_friendly_forms_give_the_same_model(jit):
    """Shifted-sum depthwise conv and matmul resizes (XLA forms) == oneDNN/native forms,
    eagerly and inside tf.function(jit_compile=True)."""
    model, inputs = _tiny(), rgbd_inputs(2, height=32, width=64)
    expected = predict_numpy(model, inputs)
    xla_model = _tiny(xla_friendly=True)
    xla_model.set_weights(model.get_weights())
    assert xla_model.get_layer("encoder").get_config()["xla_friendly"]
    forward = tf.function(lambda x: xla_model(x, training=False), jit_compile=jit)
    got = {k: v.numpy() for k, v in forward(inputs).items()}
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-4)
