"""SavedModel export: signature names and dtypes, in-graph preprocessing, round trip, versions."""

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import yaml

from eval_models import depth_threshold_model
from ssma_tf.data.normalize import normalize
from ssma_tf.data.schema import ModalitySpec
from ssma_tf.errors import InputError
from ssma_tf.evaluation.inference import padded_probabilities
from ssma_tf.export.serving import export_saved_model

SPECS = {
    "rgb": ModalitySpec("rgb", "color", 3, "uint8"),
    "depth": ModalitySpec("depth", "raw", 1, "uint16", depth_scale=0.001),
}


def _raw_inputs(height=37, width=50, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    depth = rng.integers(0, 6000, (2, height, width, 1), dtype=np.uint16)
    depth[:, :5] = 0  # holes
    return {"rgb": rgb, "depth": depth}


@pytest.fixture(scope="module")
def model():
    return depth_threshold_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("export") / "segmenter")
    path = export_saved_model(model, SPECS, folder, depth_max=10.0,
                              config_dict={"model": "tiny", "depth_max": 10.0})
    return folder, path


def test_version_folder_and_side_files(exported):
    folder, path = exported
    assert path == os.path.join(folder, "1")
    assert sorted(n for n in os.listdir(folder)) == ["1"]  # no temp folder left behind
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    with open(os.path.join(path, "config.yaml")) as handle:
        assert yaml.safe_load(handle)["model"] == "tiny"
    with open(os.path.join(path, "export_info.json")) as handle:
        info = json.load(handle)
    assert info["inputs"]["depth"]["dtype"] == "uint16"


def test_signature_names_and_dtypes(exported):
    loaded = tf.saved_model.load(exported[1])
    assert set(loaded.signatures) == {"serving_default", "image_bytes", "records"}
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert set(inputs) == {"rgb", "depth"}
    # unknown rank: TF Serving feeds tensors unchecked, so the graph checks them itself
    assert inputs["rgb"].dtype == tf.uint8 and inputs["rgb"].shape.rank is None
    assert inputs["depth"].dtype == tf.uint16
    for name in loaded.signatures:
        outputs = loaded.signatures[name].structured_outputs
        assert set(outputs) == {"labels", "probabilities"}
        assert outputs["labels"].dtype == tf.int32 and outputs["labels"].shape.rank == 3
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["probabilities"].shape.as_list() == [None, None, None, 3]
    assert set(loaded.signatures["image_bytes"].structured_input_signature[1]) == {"rgb",
                                                                                    "depth"}
    assert list(loaded.signatures["records"].structured_input_signature[1]) == ["records"]


def test_round_trip_matches_keras_model_at_any_size(model, exported):
    serve = tf.saved_model.load(exported[1]).signatures["serving_default"]
    raw = _raw_inputs()
    result = serve(rgb=tf.constant(raw["rgb"]), depth=tf.constant(raw["depth"]))
    expected = padded_probabilities(model, normalize(raw, SPECS, depth_max=10.0))
    assert result["probabilities"].shape == (2, 37, 50, 3)
    np.testing.assert_allclose(result["probabilities"].numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(result["labels"].numpy(), np.argmax(expected.numpy(), -1))
    assert len(np.unique(result["labels"].numpy())) > 1


def test_depth_in_metres_and_next_version(model, exported):
    folder, _ = exported
    path = export_saved_model(model, SPECS, folder, depth_max=10.0, depth_input="metres")
    assert path == os.path.join(folder, "2")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert serve.structured_input_signature[1]["depth"].dtype == tf.float32
    units = tf.saved_model.load(os.path.join(folder, "1")).signatures["serving_default"]
    raw = _raw_inputs(height=20, width=20, seed=1)
    metres = raw["depth"].astype(np.float32) * 0.001
    a = serve(rgb=tf.constant(raw["rgb"]), depth=tf.constant(metres))["probabilities"]
    b = units(rgb=tf.constant(raw["rgb"]), depth=tf.constant(raw["depth"]))["probabilities"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # encoded images stay in the dataset's units (16-bit PNG, mm) whatever --depth-input says
    png = {name: tf.constant([tf.io.encode_png(x).numpy() for x in raw[name]]) for name in raw}
    c = tf.saved_model.load(path).signatures["image_bytes"](**png)["probabilities"]
    np.testing.assert_allclose(c.numpy(), b.numpy(), atol=1e-5)


def test_existing_version_refused_unless_overwrite(model, tmp_path):
    folder = str(tmp_path / "m")
    first = export_saved_model(model, SPECS, folder, version=3)
    with pytest.raises(InputError, match=r"already holds version 3.*--overwrite"):
        export_saved_model(model, SPECS, folder, version=3, depth_input="metres")
    info = json.load(open(os.path.join(first, "export_info.json")))
    assert info["depth_input"] == "units"  # untouched
    export_saved_model(model, SPECS, folder, version=3, depth_input="metres", overwrite=True)
    info = json.load(open(os.path.join(first, "export_info.json")))
    assert info["depth_input"] == "metres"
    assert sorted(os.listdir(folder)) == ["3"]
    with pytest.raises(InputError, match="positive"):
        export_saved_model(model, SPECS, folder, version=0)


def test_missing_spec_and_bad_depth_option_rejected(model, tmp_path):
    with pytest.raises(InputError, match="depth"):
        export_saved_model(model, {"rgb": SPECS["rgb"]}, str(tmp_path / "m"))
    with pytest.raises(InputError, match="depth-input"):
        export_saved_model(model, SPECS, str(tmp_path / "m"), depth_input="feet")
    assert not os.path.exists(tmp_path / "m")


def test_export_cli_from_a_checkpoint(tmp_path, capsys):
    import export
    from eval_models import saved_run

    config_path = saved_run(tmp_path, model="AdapNet_pp")
    out = tmp_path / "served"
    assert export.main(["--config", config_path, "--output", str(out)]) == 0
    assert "serving_default" in capsys.readouterr().out
    version = out / "1"
    assert {"saved_model.pb", "config.yaml", "export_info.json", "run_info.json"} <= set(
        os.listdir(version))
    with open(version / "config.yaml") as handle:
        assert yaml.safe_load(handle)["model"] == "AdapNet_pp"
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["rgb"]
    result = serve(rgb=tf.constant(_raw_inputs(height=20, width=33)["rgb"]))
    assert result["labels"].shape == (2, 20, 33)
    assert result["probabilities"].shape == (2, 20, 33, 2)
    np.testing.assert_array_equal(result["labels"].numpy(),
                                  np.argmax(result["probabilities"].numpy(), -1))
    assert export.main(["--config", config_path, "--output", str(out),
                        "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert export.main(["--config", config_path, "--output", str(out), "--version", "1"]) == 2
    assert "already holds version 1; pass --overwrite" in capsys.readouterr().err
    assert export.main(["--config", config_path, "--output", str(out), "--size", "8", "8"]) == 2
    assert "--size applies to --format tflite only" in capsys.readouterr().err


def test_export_cli_onnx_matches_the_keras_model(tmp_path, capsys):
    import export
    from eval_models import saved_run
    from ssma_tf.runs import load_eval_config, load_run

    config_path = saved_run(tmp_path, model="AdapNet_pp")
    out = tmp_path / "onnx"
    assert export.main(["--config", config_path, "--output", str(out), "--format", "onnx"]) == 0
    assert "model.onnx written" in capsys.readouterr().out
    run = load_run(load_eval_config(config_path))
    rgb = _raw_inputs(height=20, width=33)["rgb"]
    expected = padded_probabilities(run.model, normalize({"rgb": rgb}, run.specs)).numpy()
    labels, probabilities = ort.InferenceSession(str(out / "1" / "model.onnx")).run(
        ["labels", "probabilities"], {"rgb": rgb})
    assert probabilities.shape == (2, 20, 33, 2)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.argmax(-1))
