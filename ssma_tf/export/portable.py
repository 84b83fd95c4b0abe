"""The serving graph as one file for another runtime: ONNX (tf2onnx, onnxruntime) or
TFLite (the TFLite converter, the LiteRT interpreter).

Same contract as `serving_default` (raw sensor tensors in, normalisation and padding inside,
`labels` and `probabilities` out), without the graph's input checks: those runtimes check
dtype and rank (ONNX) or the fixed shape (TFLite) against the declared inputs themselves.
ONNX takes any batch and size; TFLite takes one image of the size given at export (LiteRT
needs static shapes here: the MiT reshapes refuse two dynamic dimensions).
"""

import os
import tempfile

import keras
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.export.layout import version_folder, write_side_files
from ssma_tf.export.serving import export_info, serving_specs
from ssma_tf.export.signatures import predictions
from ssma_tf.io_utils import atomic_dir

FORMATS = ("savedmodel", "onnx", "tflite")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model.tflite"}
ONNX_OPSET = 17


def _function(model, graph_specs, signature, depth_max):
    return tf.function(lambda inputs: predictions(model, inputs, graph_specs, depth_max),
                       input_signature=[signature])


def onnx_bytes(model, graph_specs, signature, depth_max):
    """The serialized ONNX model of the serving graph (inputs [B,H,W,C] per modality)."""
    try:
        import tf2onnx
    except ImportError:
        raise InputError("--format onnx needs tf2onnx: pip install 'ssma_tf[export]'") from None
    function = _function(model, graph_specs, signature, depth_max)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=[signature],
                                             opset=ONNX_OPSET)
    return proto.SerializeToString()


def tflite_bytes(model, graph_specs, signature, depth_max, size):
    """The TFLite flatbuffer of the serving graph for one image of `size` (height, width).

    Converted from a SavedModel, which freezes the variables (from a concrete function the
    converter keeps some as resource variables the interpreter leaves uninitialised)."""
    fixed = {name: tf.TensorSpec([1, *size, s.shape[-1]], s.dtype, name=name)
             for name, s in signature.items()}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", _function(model, graph_specs, fixed, depth_max))
    with tempfile.TemporaryDirectory() as folder:
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=["serving_default"])
        return converter.convert()


def check_size(size):
    """(height, width) of two positive ints; InputError naming --size otherwise."""
    if size is None or len(size) != 2 or min(size) < 1:
        raise InputError(f"--size: expected two positive integers HEIGHT WIDTH, got {size}")
    return tuple(int(s) for s in size)


def export_file(model, specs, output_dir, fmt, *, depth_max=10.0, config_dict=None,
                depth_input="units", version=None, run_info=None, overwrite=False, size=None):
    """Writes `output_dir/<version>/model.onnx` or `model.tflite` with the side files (as
    export_saved_model); returns the model file's path. `size`: TFLite's (height, width)."""
    if fmt not in FILE_NAMES:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    graph_specs, signature = serving_specs(model, specs, depth_input)
    final = version_folder(output_dir, version, overwrite)
    info = export_info(graph_specs, signature, specs, depth_input, depth_max)
    del info["signatures"]
    info["format"] = fmt
    if fmt == "onnx":
        blob = onnx_bytes(model, graph_specs, signature, depth_max)
    else:
        size = check_size(size)
        blob = tflite_bytes(model, graph_specs, signature, depth_max, size)
        for name, entry in info["inputs"].items():
            entry["shape"] = [1, *size, signature[name].shape[-1]]
    with atomic_dir(final) as tmp:
        with open(os.path.join(tmp, FILE_NAMES[fmt]), "wb") as handle:
            handle.write(blob)
        write_side_files(tmp, info, config_dict, run_info)
    return os.path.join(final, FILE_NAMES[fmt])
