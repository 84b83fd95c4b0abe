"""TokenFusion: outputs, mask L1 output, the decoder feature, token exchange, mask token,
learning, replicas, jax."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_testing import predict_numpy, rgbd_inputs, run_under_jax, textbook_fused_map
from ssma_tf.config import config_from_dict
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import get_framework
from ssma_tf.frameworks.losses import penalty_loss, supervised_loss
from ssma_tf.models.factory import build_model
from ssma_tf.models.token_fusion import build_token_fusion, exchange_tokens

MODALITIES = {"rgb": 3, "depth": 1}
TOKENS_64x96 = 16 * 24 + 8 * 12 + 4 * 6 + 2 * 3  # stage grids of a 64x96 input, 1 block each


def _tiny(**kwargs):
    return build_token_fusion(5, MODALITIES, variant="tiny", decoder_dim=16, **kwargs)


def _logits(out):
    return {k: v for k, v in out.items() if k != "mask_l1"}


def _set_stream_masks(model, biases):
    """Make every score predictor output mask = softmax(bias)[0] per stream (kernel 0)."""
    for i in range(4):
        last = model.get_layer("encoder").exchanges[i].scores[-1]
        last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
        last.bias.assign(np.asarray(biases, "float32"))


def test_outputs_shapes_loss_weights_and_mask_l1():
    model = _tiny()
    inputs = rgbd_inputs(2)
    out = predict_numpy(model, inputs)
    assert set(out) == {"logits", "logits_rgb", "logits_depth", "mask_l1"}
    assert all(v.shape == (2, 64, 96, 5) and v.dtype == np.float32
               for v in _logits(out).values())
    np.testing.assert_allclose(out["logits"], (out["logits_rgb"] + out["logits_depth"]) / 2,
                               atol=1e-6)
    assert model.output_loss_weights == pytest.approx(
        {"logits": 1 / 3, "logits_rgb": 1 / 3, "logits_depth": 1 / 3})
    assert model.output_penalty_weights == {"mask_l1": 1e-4}
    # Per sample: fresh predictors score ~0, so each of the 2 x TOKENS masks is ~0.5.
    assert out["mask_l1"].shape == (2,) and out["mask_l1"].dtype == np.float32
    np.testing.assert_allclose(out["mask_l1"], TOKENS_64x96, rtol=0.05)
    penalty = penalty_loss(out, model.output_penalty_weights, global_batch_size=4)
    assert float(penalty) == pytest.approx(1e-4 * out["mask_l1"].sum() / 4)


def test_exchange_tokens_swaps_only_below_threshold():
    rng = np.random.default_rng(0)
    attn = rng.normal(size=(4, 2, 3, 5)).astype("float32")  # 2 streams x 2 samples
    masks = rng.uniform(0.1, 1.0, size=(4, 2, 3, 1)).astype("float32")
    masks[2, 0, 1] = 0.01  # stream 1 (depth), sample 0, token (0, 1): below 0.02
    masks[1, 1, 2] = 0.019  # stream 0 (rgb), sample 1, token (1, 2)
    out = keras.ops.convert_to_numpy(exchange_tokens(attn, masks, 2, 0.02))
    expected = attn * masks
    expected[2, 0, 1] = attn[0, 0, 1] * masks[0, 0, 1]
    expected[1, 1, 2] = attn[3, 1, 2] * masks[3, 1, 2]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # Three streams: the replacement is the mean of the two others.
    attn3, masks3 = attn[:3], np.full((3, 2, 3, 1), 0.5, "float32")
    masks3[0, 1, 1] = 0.0
    out3 = keras.ops.convert_to_numpy(exchange_tokens(attn3, masks3, 3, 0.02))
    np.testing.assert_allclose(out3[0, 1, 1], (attn3[1, 1, 1] + attn3[2, 1, 1]) * 0.25,
                               rtol=1e-6)


def test_streams_couple_only_through_exchanged_tokens():
    model = _tiny()
    inputs = rgbd_inputs(2)
    new_rgb = dict(inputs, rgb=inputs["rgb"][::-1].copy())
    new_depth = dict(inputs, depth=inputs["depth"][::-1].copy())
    # Fresh model: masks ~0.5, nothing exchanged, the streams are independent.
    a, b = predict_numpy(model, inputs), predict_numpy(model, new_rgb)
    np.testing.assert_allclose(a["logits_depth"], b["logits_depth"], atol=1e-6)
    # Depth masks ~1e-9 (< 0.02), rgb masks ~1: depth receives rgb's tokens, not vice versa.
    _set_stream_masks(model, [[10.0, -10.0], [-10.0, 10.0]])
    a, b, c = (predict_numpy(model, x) for x in (inputs, new_rgb, new_depth))
    assert np.abs(a["logits_depth"] - b["logits_depth"]).max() > 1e-4
    np.testing.assert_allclose(a["logits_rgb"], c["logits_rgb"], atol=1e-5)
    np.testing.assert_allclose(a["mask_l1"], TOKENS_64x96, rtol=1e-3)  # rgb masks only


def test_missing_modality_uses_mask_token_per_sample():
    model = _tiny()
    inputs = rgbd_inputs(3)
    inputs["depth"][1] = 0.0  # sample 1: depth missing
    inputs["depth"][2, :10] = 0.0  # sample 2: holes only
    before = predict_numpy(model, inputs)
    assert all(np.isfinite(v).all() for v in before.values())
    before.pop("mask_l1")
    token = model.get_layer("encoder").mask_token
    token.assign(np.random.default_rng(1).normal(size=token.shape).astype("float32"))
    after = predict_numpy(model, inputs)
    for key in before:
        np.testing.assert_allclose(after[key][[0, 2]], before[key][[0, 2]], atol=1e-6)
    for key in ("logits", "logits_depth"):
        assert np.abs(after[key][1] - before[key][1]).max() > 1e-3
    # Nothing is exchanged yet (masks ~0.5), so the rgb stream never sees the token.
    np.testing.assert_allclose(after["logits_rgb"], before["logits_rgb"], atol=1e-6)


def test_training_reduces_loss_and_mask_l1():
    model = _tiny(l1_weight=1e-2)
    rng = np.random.default_rng(3)
    labels = np.zeros((2, 32, 48), "int32")
    labels[:, 8:24, 12:36] = 1
    inputs = {"rgb": (labels[..., None] * 2.0 + rng.normal(0, 0.3, (2, 32, 48, 3))),
              "depth": labels[..., None] * 0.5 + 0.2}
    inputs = {k: tf.constant(v, tf.float32) for k, v in inputs.items()}
    optimizer = keras.optimizers.AdamW(3e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            ce = supervised_loss(labels, outputs, model.output_loss_weights, num_classes=5,
                                 global_batch_size=2)
            l1 = penalty_loss(outputs, model.output_penalty_weights, global_batch_size=2)
            loss = ce + l1
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return ce, l1

    history = [[float(v) for v in step()] for _ in range(25)]
    assert history[-1][0] < 0.6 * history[0][0]
    assert history[-1][1] < history[0][1]  # the L1 term drives the masks down


@pytest.mark.parametrize("framework", ["supervised", "m3l", "cps"])
def test_frameworks_add_the_mask_l1_penalty(framework):
    """With l1_weight 1 the penalty (~TOKENS per image at init) dominates the logged loss."""
    config = config_from_dict({
        "framework": framework, "model": "tokenfusion", "num_classes": 5, "batch_size": 1,
        "unlabeled_batch_size": 1, "height": 32, "width": 48, "max_iteration": 10})
    fw = get_framework(framework)(config, lambda: _tiny(l1_weight=1.0))
    fw.step = tf.Variable(0, dtype=tf.int64, trainable=False)
    fw.build()
    inputs = {k: tf.constant(v) for k, v in rgbd_inputs(1, height=32, width=48).items()}
    labels = tf.zeros((1, 32, 48), tf.int32)
    loss = float(fw.train_step((inputs, labels), inputs)["loss"])
    tokens = 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2
    models = 2 if framework == "cps" else 1
    assert models * 0.9 * tokens < loss < models * tokens + 20  # + the cross-entropies


def test_build_model_dispatches_tokenfusion():
    config = config_from_dict({"model": "tokenfusion", "num_classes": 3, "decoder_dim": 8},
                              "test.yaml")
    model = build_model(config, {"rgb": 3, "depth": 1})
    assert model.name == "token_fusion"
    out = model({"rgb": np.zeros((1, 32, 64, 3), "float32"),
                 "depth": np.zeros((1, 32, 64, 1), "float32")})
    assert out["logits_depth"].shape == (1, 32, 64, 3) and out["mask_l1"].shape == (1,)


def test_build_model_gives_tokenfusion_the_mean_of_the_streams_decoder_maps():
    config = config_from_dict({"model": "tokenfusion", "backbone": "tiny", "num_classes": 3,
                               "decoder_dim": 8, "ensemble": "mean"}, "test.yaml")
    model = build_model(config, MODALITIES, features=("decoder",))
    inputs = rgbd_inputs(2, 32, 48)
    out = predict_numpy(model, inputs)
    assert set(out) == {"logits", "logits_rgb", "logits_depth", "mask_l1", "feature_decoder"}
    assert out["feature_decoder"].shape == (2, 8, 12, 8)
    encoder = keras.Model(model.input, model.get_layer("encoder").output)
    features = encoder(inputs, training=False)[:4]        # flattened: [c1..c4, mask_l1]
    stacked = textbook_fused_map(model.get_layer("decoder"), features)
    np.testing.assert_allclose(out["feature_decoder"], (stacked[:2] + stacked[2:]) / 2,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"model tokenfusion has no feature 'rep' \(it has "
                                          r"decoder\)"):
        build_model(config, MODALITIES, features=("rep",))


def test_bad_modalities_name_tokenfusion():
    with pytest.raises(ConfigError, match="TokenFusion needs at least 2"):
        build_token_fusion(3, {"rgb": 3}, variant="tiny")
    with pytest.raises(ConfigError, match="'nir' has 2 channels; TokenFusion"):
        build_token_fusion(3, {"rgb": 3, "nir": 2}, variant="tiny")


def test_each_replica_gets_its_own_mask_l1():
    """Two replicas, one sample each: per-sample sums match single-device calls (plain BN:
    a second strategy with synchronized BN in the same process trips TF's collectives)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _tiny()
    rng = np.random.default_rng(0)
    for exchange in model.get_layer("encoder").exchanges:  # input-dependent masks
        for layer in exchange.scores:
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    data = [rgbd_inputs(1, height=32, width=48, seed=i) for i in range(2)]
    expected = [float(model(d, training=True)["mask_l1"][0]) for d in data]
    assert abs(expected[0] - expected[1]) > 1e-2
    dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: data[ctx.replica_id_in_sync_group])

    @tf.function
    def step(x):
        return strategy.run(lambda x: model(x, training=True)["mask_l1"], args=(x,))

    got = [float(v[0]) for v in strategy.experimental_local_results(step(dist))]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


JAX_SCRIPT = """
import jax, numpy as np, keras
from ssma_tf.models.token_fusion import TokenExchange
assert keras.backend.backend() == "jax"
layer = TokenExchange(8, 2)
rng = np.random.default_rng(0)
attn, x = (rng.normal(size=(4, 4, 6, 8)).astype("float32") for _ in range(2))
layer.build(x.shape)
run = jax.jit(lambda weights, attn, x: layer.stateless_call(weights, [], attn, x)[0])
out = run([v.value for v in layer.trainable_variables], attn, x)
masks = np.asarray(layer.token_masks(x))
np.testing.assert_allclose(np.asarray(out), attn * masks, rtol=1e-5)
print("JAX_OK")
"""


@pytest.mark.slow
def test_token_exchange_runs_under_jax():
    """The TokenFusion layers under KERAS_BACKEND=jax (the MiT around them: test_mit_jax)."""
    assert "JAX_OK" in run_under_jax(JAX_SCRIPT)
