"""ONNX and TFLite exports run in their own runtimes (onnxruntime, the LiteRT interpreter)
and match the Keras model within 1e-4 for AdapNet++, SSMA and LinearFusion at tiny sizes."""

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert import interpreter as litert

from ssma_tf.data.normalize import normalize
from ssma_tf.data.schema import ModalitySpec
from ssma_tf.errors import InputError
from ssma_tf.evaluation.inference import padded_probabilities
from ssma_tf.export.portable import export_file

SPECS = {
    "rgb": ModalitySpec("rgb", "color", 3, "uint8"),
    "depth": ModalitySpec("depth", "raw", 1, "uint16", depth_scale=0.001),
}
TINY = dict(width=0.125, units=(1, 1, 1, 1))
HEIGHT, WIDTH = 40, 50  # not multiples of 32: the in-graph padding and crop are exercised


def _model(name):
    if name == "AdapNet_pp":
        from ssma_tf.models.adapnet_pp import build_adapnet_pp
        return build_adapnet_pp(3, **TINY)
    if name == "SSMA":
        from ssma_tf.models.ssma import build_ssma
        return build_ssma(3, {"rgb": 3, "depth": 1}, **TINY)
    from ssma_tf.models.linear_fusion import build_linear_fusion
    return build_linear_fusion(3, {"rgb": 3, "depth": 1}, variant="tiny", decoder_dim=16)


def _raw(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    raw = {"rgb": rng.integers(0, 256, (batch, HEIGHT, WIDTH, 3), dtype=np.uint8),
           "depth": rng.integers(0, 6000, (batch, HEIGHT, WIDTH, 1), dtype=np.uint16)}
    raw["depth"][:, :4] = 0  # holes
    return {name: raw[name] for name in model.input}


def _check(out, model, raw):
    expected = padded_probabilities(model, normalize(raw, SPECS)).numpy()
    assert out["probabilities"].shape == expected.shape
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4)
    clear = np.sort(expected, -1)[..., -1] - np.sort(expected, -1)[..., -2] > 1e-3
    np.testing.assert_array_equal(out["labels"][clear], expected.argmax(-1)[clear])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["AdapNet_pp", "SSMA", "LinearFusion"])
def test_onnx_and_tflite_match_the_keras_model(name, tmp_path):
    model = _model(name)
    path = export_file(model, SPECS, str(tmp_path / "m"), "onnx")
    assert path == str(tmp_path / "m" / "1" / "model.onnx")
    session = ort.InferenceSession(path)
    assert sorted(i.name for i in session.get_inputs()) == sorted(model.input)
    raw = _raw(model, batch=2)
    names = [o.name for o in session.get_outputs()]
    _check(dict(zip(names, session.run(None, raw))), model, raw)

    path = export_file(model, SPECS, str(tmp_path / "m"), "tflite", size=(HEIGHT, WIDTH))
    assert path == str(tmp_path / "m" / "2" / "model.tflite")
    with open(os.path.join(os.path.dirname(path), "export_info.json")) as handle:
        assert json.load(handle)["inputs"]["rgb"]["shape"] == [1, HEIGHT, WIDTH, 3]
    runner = litert.Interpreter(model_path=path).get_signature_runner("serving_default")
    raw = _raw(model, batch=1, seed=1)
    _check(runner(**raw), model, raw)


def test_bad_format_size_and_existing_version_rejected(tmp_path):
    from eval_models import depth_threshold_model

    model = depth_threshold_model()
    folder = str(tmp_path / "m")
    with pytest.raises(InputError, match="--format"):
        export_file(model, SPECS, folder, "pb")
    with pytest.raises(InputError, match="--size"):
        export_file(model, SPECS, folder, "tflite", size=(0, 8))
    assert not os.path.exists(folder)
    export_file(model, SPECS, folder, "tflite", size=(8, 8))
    with pytest.raises(InputError, match="already holds version 1"):
        export_file(model, SPECS, folder, "onnx", version=1)
    runner = litert.Interpreter(model_path=os.path.join(folder, "1", "model.tflite"))
    assert runner.get_signature_runner("serving_default").get_input_details()["depth"][
        "dtype"] == np.uint16
