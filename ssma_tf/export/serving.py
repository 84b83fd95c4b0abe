"""SavedModel export for TF Serving: raw sensor inputs, preprocessing in the graph.

Layout: `output_dir/<version>/` (TF Serving's `<model>/<version>/`; it serves the highest
integer version). The version folder holds the SavedModel plus `config.yaml` (the resolved
config), `export_info.json` (modalities, input dtypes and units, outputs) and the training
`run_info.json` when known; the SavedModel loader ignores them.

Signature `serving_default`, one named input per model modality:
- 8-bit images (encodings color, image, jet, hha): uint8 `[B, H, W, 3]`, RGB order;
- raw depth: uint16 `[B, H, W, 1]` in stored units (`depth_scale` metres each: millimetres by
  default), or float32 metres with `depth_input="metres"`. 0 = no reading.
Outputs: `labels` int32 `[B, H, W]` and `probabilities` float32 `[B, H, W, C]`. Any H, W:
the graph pads to a multiple of 32 and crops back. A missing sensor is sent as zeros.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf
import yaml

from ssma_tf.data.normalize import normalize
from ssma_tf.errors import InputError
from ssma_tf.evaluation.evaluator import padded_probabilities
from ssma_tf.io_utils import atomic_dir

DEPTH_INPUTS = ("units", "metres")


def model_modalities(model):
    """The model's input modality names, in the order of its input dict."""
    if not isinstance(model.input, dict):
        raise InputError("the model must take a dict of modality inputs")
    return list(model.input)


def serving_specs(model, specs, depth_input="units"):
    """{name: ModalitySpec} used in the graph and {name: tf.TensorSpec} of the signature.

    For float metres input the raw-depth spec gets depth_scale 1 so `normalize` reads metres.
    """
    if depth_input not in DEPTH_INPUTS:
        raise InputError(f"--depth-input must be one of {DEPTH_INPUTS}, got {depth_input!r}")
    graph_specs, signature = {}, {}
    for name in model_modalities(model):
        if name not in specs:
            raise InputError(f"no modality spec for model input {name!r}; the dataset has "
                             f"{sorted(specs)}")
        spec = specs[name]
        dtype = tf.as_dtype(spec.dtype)
        if spec.encoding == "raw" and depth_input == "metres":
            spec, dtype = dataclasses.replace(spec, depth_scale=1.0), tf.float32
        graph_specs[name] = spec
        signature[name] = tf.TensorSpec([None, None, None, spec.channels], dtype, name=name)
    return graph_specs, signature


def export_saved_model(model, specs, output_dir, *, depth_max=10.0, config_dict=None,
                       depth_input="units", version=None, run_info=None):
    """Writes the serving SavedModel under `output_dir/<version>/` atomically; returns that path.

    `specs`: {modality: ModalitySpec} (the dataset's). `version`: an int; default one more
    than the highest existing integer folder (1 for a new model folder). `run_info`: the
    training run's run_info dict, copied beside the model as run_info.json.
    """
    graph_specs, signature = serving_specs(model, specs, depth_input)

    def serve(inputs):
        probabilities = padded_probabilities(model, normalize(inputs, graph_specs, depth_max))
        labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"labels": labels, "probabilities": probabilities}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", tf.function(serve, input_signature=[signature]))

    version = next_version(output_dir) if version is None else int(version)
    final = os.path.join(output_dir, str(version))
    with atomic_dir(final) as tmp:
        archive.write_out(tmp, verbose=False)
        with open(os.path.join(tmp, "config.yaml"), "w") as handle:
            yaml.safe_dump(config_dict or {}, handle, sort_keys=False)
        info = {
            "signature": "serving_default",
            "inputs": {name: {"dtype": s.dtype.name, "shape": [None, None, None, s.shape[-1]],
                              "encoding": graph_specs[name].encoding}
                       for name, s in signature.items()},
            "outputs": {"labels": "int32 [B,H,W]", "probabilities": "float32 [B,H,W,C]"},
            "depth_input": depth_input,
            "depth_max": depth_max,
            "modalities": [specs[name].to_json() for name in signature],
        }
        with open(os.path.join(tmp, "export_info.json"), "w") as handle:
            json.dump(info, handle, indent=1)
        if run_info:
            with open(os.path.join(tmp, "run_info.json"), "w") as handle:
                json.dump(run_info, handle, indent=1, default=str)
    return final


def next_version(output_dir):
    """1 + the highest integer sub-folder of `output_dir` (1 if none)."""
    if not os.path.isdir(output_dir):
        return 1
    versions = [int(n) for n in os.listdir(output_dir)
                if n.isdigit() and os.path.isdir(os.path.join(output_dir, n))]
    return max(versions, default=0) + 1
