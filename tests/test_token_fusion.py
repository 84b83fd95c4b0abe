"""TokenFusion: outputs, mask L1 loss, token exchange, mask token, learning, factory, jax."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import keras

from ssma_tf.config import config_from_dict
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks.losses import supervised_loss
from ssma_tf.models.factory import build_model
from ssma_tf.models.token_fusion import build_token_fusion, exchange_tokens

MODALITIES = {"rgb": 3, "depth": 1}
TOKENS_64x96 = 16 * 24 + 8 * 12 + 4 * 6 + 2 * 3  # stage grids of a 64x96 input, 1 block each


def _tiny(**kwargs):
    return build_token_fusion(5, MODALITIES, variant="tiny", decoder_dim=16, **kwargs)


def _inputs(batch=2, height=64, width=96, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.normal(size=(batch, height, width, 3)).astype("float32"),
        "depth": rng.uniform(size=(batch, height, width, 1)).astype("float32"),
    }


def _predict(model, inputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs, training=False).items()}


def _set_stream_masks(model, biases):
    """Make every score predictor output mask = softmax(bias)[0] per stream (kernel 0)."""
    for i in range(4):
        last = model.get_layer("encoder").exchanges[i].scores[-1]
        last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
        last.bias.assign(np.asarray(biases, "float32"))


def test_outputs_shapes_loss_weights_and_mask_l1():
    model = _tiny()
    inputs = _inputs(batch=2)
    out = _predict(model, inputs)
    assert set(out) == {"logits", "logits_rgb", "logits_depth"}
    assert all(v.shape == (2, 64, 96, 5) and v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["logits"], (out["logits_rgb"] + out["logits_depth"]) / 2,
                               atol=1e-6)
    assert model.output_loss_weights == pytest.approx(
        {"logits": 1 / 3, "logits_rgb": 1 / 3, "logits_depth": 1 / 3})
    # One L1 term per block; fresh predictors score ~0, so every mask is ~0.5.
    assert len(model.losses) == 4
    total = float(sum(keras.ops.convert_to_numpy(x) for x in model.losses))
    assert total == pytest.approx(1e-4 * 2 * 0.5 * TOKENS_64x96, rel=0.05)


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
    inputs = _inputs(batch=2)
    new_rgb = dict(inputs, rgb=inputs["rgb"][::-1].copy())
    new_depth = dict(inputs, depth=inputs["depth"][::-1].copy())
    # Fresh model: masks ~0.5, nothing exchanged, the streams are independent.
    a, b = _predict(model, inputs), _predict(model, new_rgb)
    np.testing.assert_allclose(a["logits_depth"], b["logits_depth"], atol=1e-6)
    # Depth masks ~1e-9 (< 0.02), rgb masks ~1: depth receives rgb's tokens, not vice versa.
    _set_stream_masks(model, [[10.0, -10.0], [-10.0, 10.0]])
    a, b, c = _predict(model, inputs), _predict(model, new_rgb), _predict(model, new_depth)
    assert np.abs(a["logits_depth"] - b["logits_depth"]).max() > 1e-4
    np.testing.assert_allclose(a["logits_rgb"], c["logits_rgb"], atol=1e-5)
    total = float(sum(keras.ops.convert_to_numpy(x) for x in model.losses))
    assert total == pytest.approx(1e-4 * TOKENS_64x96, rel=1e-3)  # rgb masks only


def test_missing_modality_uses_mask_token_per_sample():
    model = _tiny()
    inputs = _inputs(batch=3)
    inputs["depth"][1] = 0.0  # sample 1: depth missing
    inputs["depth"][2, :10] = 0.0  # sample 2: holes only
    before = _predict(model, inputs)
    assert all(np.isfinite(v).all() for v in before.values())
    token = model.get_layer("encoder").mask_token
    token.assign(np.random.default_rng(1).normal(size=token.shape).astype("float32"))
    after = _predict(model, inputs)
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
            l1 = tf.add_n(model.losses)
            loss = ce + l1
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return ce, l1

    history = [[float(v) for v in step()] for _ in range(25)]
    assert history[-1][0] < 0.6 * history[0][0]
    assert history[-1][1] < history[0][1]  # the L1 term drives the masks down


def test_build_model_dispatches_tokenfusion():
    config = config_from_dict({"model": "tokenfusion", "num_classes": 3, "decoder_dim": 8},
                              "test.yaml")
    model = build_model(config, {"rgb": 3, "depth": 1})
    assert model.name == "token_fusion"
    out = model({"rgb": np.zeros((1, 32, 64, 3), "float32"),
                 "depth": np.zeros((1, 32, 64, 1), "float32")})
    assert out["logits_depth"].shape == (1, 32, 64, 3) and len(model.losses) == 8  # b0


def test_bad_modalities_name_tokenfusion():
    with pytest.raises(ConfigError, match="TokenFusion needs at least 2"):
        build_token_fusion(3, {"rgb": 3}, variant="tiny")
    with pytest.raises(ConfigError, match="'nir' has 2 channels; TokenFusion"):
        build_token_fusion(3, {"rgb": 3, "nir": 2}, variant="tiny")


JAX_SCRIPT = """
import numpy as np, keras
from ssma_tf.models.token_fusion import build_token_fusion
assert keras.backend.backend() == "jax"
model = build_token_fusion(4, {"rgb": 3, "depth": 1}, variant="tiny", decoder_dim=8)
x = {"rgb": np.random.rand(2, 64, 96, 3).astype("float32"),
     "depth": np.random.rand(2, 64, 96, 1).astype("float32")}
x["depth"][1] = 0.0
out = model.predict(x, verbose=0)
assert all(v.shape == (2, 64, 96, 4) and np.isfinite(v).all() for v in out.values())
model(x)
assert len(model.losses) == 4
print("JAX_OK")
"""


@pytest.mark.slow
def test_runs_under_jax():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "JAX_OK" in result.stdout
