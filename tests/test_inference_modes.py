"""Inference modes: sliding windows against a hand-assembled average, the window grid,
settings from the config and CLI, errors."""

import numpy as np
import pytest
import tensorflow as tf

from eval_models import depth_threshold_model, sample_batch
from ssma_tf.config import config_from_dict
from ssma_tf.errors import InputError
from ssma_tf.evaluation.evaluator import evaluate, label_predictor
from ssma_tf.evaluation.inference import (
    Inference,
    padded_logits,
    probabilities,
    slide_logits,
)


@pytest.fixture(scope="module")
def model():
    return depth_threshold_model(pool=4)


def _inputs(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return {"rgb": tf.constant(rng.normal(0, 1, (2, height, width, 3)).astype(np.float32)),
            "depth": tf.constant(rng.uniform(0, 1, (2, height, width, 1)).astype(np.float32))}


def test_slide_equals_hand_assembled_window_average(model):
    # 40 x 45 with 32 x 32 windows at stride 20: rows start 0 and 8 (40 - 32: the second
    # window is moved back to end at the border), columns 0 and 13.
    inputs = _inputs(40, 45)
    total = np.zeros((2, 40, 45, 3), np.float64)
    count = np.zeros((40, 45), np.float64)
    for y in (0, 8):
        for x in (0, 13):
            window = {n: v[:, y:y + 32, x:x + 32] for n, v in inputs.items()}
            total[:, y:y + 32, x:x + 32] += model(window)["logits"].numpy()
            count[y:y + 32, x:x + 32] += 1
    expected = total / count[None, :, :, None]
    got = slide_logits(model, inputs, (32, 32), (20, 20)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the windows matter: the pooled context differs from one whole-image pass
    whole = padded_logits(model, inputs).numpy()
    assert np.abs(whole - expected).max() > 1e-3
    # inside tf.function (dynamic H, W) the same numbers come out
    traced = tf.function(lambda i: slide_logits(model, i, (32, 32), (20, 20)),
                         input_signature=[{n: tf.TensorSpec([None, None, None, v.shape[-1]])
                                           for n, v in inputs.items()}])
    np.testing.assert_allclose(traced(inputs).numpy(), expected, atol=1e-5)


def test_image_smaller_than_crop_is_one_padded_window(model):
    inputs = _inputs(20, 30)
    np.testing.assert_allclose(slide_logits(model, inputs, (64, 64), (32, 32)).numpy(),
                               padded_logits(model, inputs).numpy(), atol=1e-6)


def test_slide_probabilities_with_flip_average_two_views(model):
    inputs = _inputs(40, 45, seed=1)
    setting = Inference("slide", crop=(32, 32), stride=(16, 16))
    plain = tf.nn.softmax(slide_logits(model, inputs, (32, 32), (16, 16)), axis=-1)
    mirrored = {n: v[:, :, ::-1] for n, v in inputs.items()}
    back = tf.nn.softmax(slide_logits(model, mirrored, (32, 32), (16, 16)), axis=-1)[:, :, ::-1]
    flipped = Inference("slide", flip=True, crop=(32, 32), stride=(16, 16))
    np.testing.assert_allclose(probabilities(model, inputs, setting).numpy(), plain.numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(probabilities(model, inputs, flipped).numpy(),
                               ((plain + back) / 2).numpy(), atol=1e-6)


def test_evaluate_in_slide_mode_reports_the_setting(model):
    inputs, labels = sample_batch(batch=2, height=40, width=48)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(1)
    result = evaluate(model, dataset, num_classes=3,
                      inference=Inference("slide", crop=(32, 32), stride=(16, 16)))
    assert result["inference"] == {"mode": "slide", "scales": [1.0], "flip": False,
                                   "crop": [32, 32], "stride": [16, 16]}
    assert result["miou"] > 0.9
    predict = label_predictor(model, Inference("slide", crop=(32, 32), stride=(16, 16)))
    assert predict({n: tf.constant(v) for n, v in inputs.items()}).shape == (2, 40, 48)


def test_settings_from_config_and_arguments():
    config = config_from_dict({"model": "AdapNet_pp", "eval_mode": "slide",
                               "eval_crop": [64, 96], "eval_flip": True})
    setting = Inference.from_config(config)
    assert (setting.mode, setting.crop, setting.stride, setting.flip) == (
        "slide", (64, 96), (42, 64), True)
    assert Inference.from_config(config, mode="whole").crop is None
    assert Inference.from_config(config, stride=8).stride == (8, 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "tiles"}, "--mode"),
    ({"mode": "slide"}, "--crop"),
    ({"mode": "slide", "crop": (32, 0)}, "--crop"),
    ({"mode": "slide", "crop": 32, "stride": 40}, "must not exceed"),
    ({"scales": (1.0, -1.0)}, "--scales"),
])
def test_bad_settings_name_the_option(kwargs, message):
    with pytest.raises(InputError, match=message):
        Inference(**kwargs)
