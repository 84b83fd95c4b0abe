"""The serving functions: raw tensors, encoded image bytes or serialized records in, labels
and probabilities out, each input checked in the graph with a message naming it.

TF Serving feeds a request's tensors straight into the graph (no shape check against the
signature), so the checks are graph ops: the signatures declare their inputs with unknown
rank, assert rank, channels, non-empty, matching batch and size, then fix the static shape.
The dtype is the signature's own check (TF and TF Serving refuse another dtype).
"""

import dataclasses

import tensorflow as tf

from ssma_tf.data.normalize import normalize
from ssma_tf.data.schema import DatasetInfo, decode_example
from ssma_tf.evaluation.evaluator import padded_probabilities

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_BIT_DEPTH_OFFSET = 24  # 8 signature bytes, IHDR length + type, width, height, bit depth


def predictions(model, raw, graph_specs, depth_max):
    """{"labels": int32 [B,H,W], "probabilities": float32 [B,H,W,C]} of raw sensor tensors:
    normalised per `graph_specs`, padded to a multiple of 32 and cropped back."""
    probabilities = padded_probabilities(model, normalize(raw, graph_specs, depth_max))
    labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {"labels": labels, "probabilities": probabilities}


def _checked_images(name, x, channels):
    """`x` after asserting [B>0, H>0, W>0, channels]; the static shape set from then on."""
    rank = tf.debugging.assert_rank(
        x, 4, message=f"input {name!r}: expected rank 4 [batch, height, width, {channels}]")
    with tf.control_dependencies([rank]):
        shape = tf.shape(x)
        checks = [
            tf.debugging.assert_equal(
                shape[3], channels, message=f"input {name!r}: expected {channels} channels"),
            tf.debugging.assert_positive(
                shape[:3], message=f"input {name!r}: empty (batch, height and width must be "
                                   "at least 1)"),
        ]
    with tf.control_dependencies(checks):
        return tf.ensure_shape(tf.identity(x), [None, None, None, channels])


def _checked_together(images):
    """Assert every input has the first input's batch size, height and width."""
    names = list(images)
    first = tf.shape(images[names[0]])
    checks = []
    for name in names[1:]:
        shape = tf.shape(images[name])
        checks.append(tf.debugging.assert_equal(
            shape[0], first[0], message=f"input {name!r}: batch size differs from input "
                                        f"{names[0]!r}"))
        checks.append(tf.debugging.assert_equal(
            shape[1:3], first[1:3], message=f"input {name!r}: height and width differ from "
                                            f"input {names[0]!r}"))
    with tf.control_dependencies(checks):
        return {name: tf.identity(x) for name, x in images.items()}


def checked_tensors(inputs, channels):
    """{name: [B,H,W,C] tensor} checked per input (rank, channels, non-empty) and together."""
    return _checked_together(
        {name: _checked_images(name, x, channels[name]) for name, x in inputs.items()})


def _checked_strings(name, data, what):
    """A non-empty vector of strings [B], asserted."""
    rank = tf.debugging.assert_rank(
        data, 1, message=f"input {name!r}: expected a vector [batch] of {what}")
    with tf.control_dependencies([rank]):
        empty = tf.debugging.assert_positive(
            tf.size(data), message=f"input {name!r}: empty batch")
    with tf.control_dependencies([empty]):
        return tf.identity(data)


def _stacked(ragged, name):
    """[B, (H), (W), C] ragged images as one tensor; asserts they share one size."""
    heights, widths = ragged.row_lengths(), ragged.values.row_lengths()
    same = [tf.debugging.assert_equal(
        tf.reduce_min(n), tf.reduce_max(n),
        message=f"input {name!r}: the images of one batch must have the same size")
        for n in (heights, widths)]
    with tf.control_dependencies(same):
        return ragged.to_tensor()


def _ragged_spec(spec):
    return tf.RaggedTensorSpec([None, None, spec.channels], tf.as_dtype(spec.dtype), 1)


def _magic(data, magic):
    """Whether each string starts with `magic` (strings shorter than it are padded)."""
    head = tf.strings.substr(data + b"\0" * len(magic), 0, len(magic))
    return tf.equal(head, magic)


def decode_images(name, data, spec):
    """Encoded images [B] -> uint8|uint16 [B,H,W,C] per `spec`: PNG or JPEG for 8-bit
    modalities, 16-bit PNG (stored units) for uint16 ones."""
    data = _checked_strings(name, data, "encoded images")
    png = _magic(data, PNG_MAGIC)
    if spec.dtype == "uint16":
        padded = data + b"\0" * (PNG_BIT_DEPTH_OFFSET + 1)
        sixteen = tf.equal(tf.strings.substr(padded, PNG_BIT_DEPTH_OFFSET, 1), b"\x10")
        check = tf.debugging.Assert(
            tf.reduce_all(png & sixteen),
            [f"input {name!r}: expected 16-bit PNGs ({spec.name} in stored units)"])

        def decode(one):
            return tf.io.decode_png(one, channels=spec.channels, dtype=tf.uint16)
    else:
        check = tf.debugging.Assert(tf.reduce_all(png | _magic(data, JPEG_MAGIC)),
                                    [f"input {name!r}: expected PNG or JPEG images"])

        def decode(one):
            return tf.io.decode_image(one, channels=spec.channels, dtype=tf.uint8,
                                      expand_animations=False)
    with tf.control_dependencies([check]):
        ragged = tf.map_fn(lambda one: tf.RaggedTensor.from_tensor(decode(one)), data,
                           fn_output_signature=_ragged_spec(spec))
    return _stacked(ragged, name)


def decode_records(records, specs):
    """Serialized records of our format [B] -> {modality: uint8|uint16 [B,H,W,C]}, decoded
    as the data pipeline decodes them (PNG or raw pixels, as each record's `format` says)."""
    records = _checked_strings("records", records, "serialized records")
    png = DatasetInfo(modalities=list(specs.values()), labeled=False, num_examples=0, files=[])
    raw = dataclasses.replace(png, image_format="raw")
    format_key = {"format": tf.io.FixedLenFeature([], tf.string, default_value="png")}

    def decode(serialized):
        image_format = tf.io.parse_single_example(serialized, format_key)["format"]
        arrays = tf.cond(tf.equal(image_format, "raw"), lambda: decode_example(serialized, raw),
                         lambda: decode_example(serialized, png))
        return {name: tf.RaggedTensor.from_tensor(arrays[name]) for name in specs}

    ragged = tf.map_fn(decode, records,
                       fn_output_signature={n: _ragged_spec(s) for n, s in specs.items()})
    return {name: _stacked(ragged[name], name) for name in specs}


def serving_functions(model, graph_specs, record_specs, signature, depth_max):
    """{signature name: tf.function} for the SavedModel:

    - `serving_default`: raw tensors {modality: [B,H,W,C]} with the dtypes of `signature`;
    - `image_bytes`: encoded images {modality: string [B]} (what a REST client sends as
      {"b64": ...}), decoded and normalised per `record_specs` (the dataset's units);
    - `records`: `records` string [B], serialized records of our format.
    """
    channels = {name: spec.channels for name, spec in graph_specs.items()}

    def tensors(inputs):
        return predictions(model, checked_tensors(inputs, channels), graph_specs, depth_max)

    def image_bytes(inputs):
        images = {name: decode_images(name, data, record_specs[name])
                  for name, data in inputs.items()}
        return predictions(model, _checked_together(images), record_specs, depth_max)

    def records(serialized):
        images = _checked_together(decode_records(serialized, record_specs))
        return predictions(model, images, record_specs, depth_max)

    unknown_rank = {name: tf.TensorSpec(None, s.dtype, name=name) for name, s in signature.items()}
    strings = {name: tf.TensorSpec(None, tf.string, name=name) for name in signature}
    return {
        "serving_default": tf.function(tensors, input_signature=[unknown_rank]),
        "image_bytes": tf.function(image_bytes, input_signature=[strings]),
        "records": tf.function(records, input_signature=[
            tf.TensorSpec(None, tf.string, name="records")]),
    }
