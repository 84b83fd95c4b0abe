"""SavedModel export for TF Serving: raw sensor inputs, preprocessing in the graph.

Layout: `output_dir/<version>/` (TF Serving's `<model>/<version>/`; it serves the highest
integer version). The version folder holds the SavedModel plus `config.yaml` (the resolved
config), `export_info.json` (modalities, input dtypes and units, outputs) and the training
`run_info.json` when known; the SavedModel loader ignores them.

Signature `serving_default`, one named input per model modality:
- 8-bit images (encodings color, image, jet, hha): uint8 `[B, H, W, 3]`, RGB order;
- raw depth: uint16 `[B, H, W, 1]` in stored units (`depth_scale` metres each: millimetres by
  default), or float32 metres with `depth_input="metres"`. 0 = no reading.
Signature `image_bytes`: one string `[B]` per modality, encoded images (PNG/JPEG; 16-bit
PNG in stored units for raw depth), what a REST client sends as `{"b64": ...}`. Signature
`records`: `records` string `[B]`, serialized records of our own format (converted data).
All three return `labels` int32 `[B, H, W]` and `probabilities` float32 `[B, H, W, C]` and
check their inputs in the graph (signatures.py). Any H, W: the graph pads to a multiple of
32 and crops back. A missing sensor is sent as zeros.
"""

import dataclasses

import keras
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.export.layout import version_folder, write_side_files
from ssma_tf.export.signatures import serving_functions
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


def export_info(graph_specs, signature, specs, depth_input, depth_max):
    """export_info.json's content: inputs, outputs, signatures, modality specs."""
    return {
        "signature": "serving_default",
        "inputs": {name: {"dtype": s.dtype.name, "shape": [None, None, None, s.shape[-1]],
                          "encoding": graph_specs[name].encoding}
                   for name, s in signature.items()},
        "outputs": {"labels": "int32 [B,H,W]", "probabilities": "float32 [B,H,W,C]"},
        "signatures": {
            "serving_default": "raw tensors, inputs as `inputs`",
            "image_bytes": {name: "string [B]: " + ("16-bit PNG, stored units"
                                                    if specs[name].dtype == "uint16"
                                                    else "PNG or JPEG")
                            for name in signature},
            "records": {"records": "string [B]: serialized records (ssma_tf.data.schema)"},
        },
        "depth_input": depth_input,
        "depth_max": depth_max,
        "modalities": [specs[name].to_json() for name in signature],
    }


def export_saved_model(model, specs, output_dir, *, depth_max=10.0, config_dict=None,
                       depth_input="units", version=None, run_info=None, overwrite=False):
    """Writes the serving SavedModel under `output_dir/<version>/` atomically; returns that path.

    `specs`: {modality: ModalitySpec} (the dataset's). `version`: an int; default one more
    than the highest existing integer folder (1 for a new model folder); an existing one is
    an InputError unless `overwrite`. `run_info`: the training run's run_info dict, copied
    beside the model as run_info.json.
    """
    graph_specs, signature = serving_specs(model, specs, depth_input)
    final = version_folder(output_dir, version, overwrite)
    record_specs = {name: specs[name] for name in signature}
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in serving_functions(model, graph_specs, record_specs, signature,
                                            depth_max).items():
        archive.add_endpoint(name, function)
    with atomic_dir(final) as tmp:
        archive.write_out(tmp, verbose=False)
        write_side_files(tmp, export_info(graph_specs, signature, specs, depth_input, depth_max),
                         config_dict, run_info)
    return final
