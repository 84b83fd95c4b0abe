"""The serving functions: raw tensors, encoded image bytes or serialized records in, labels
and probabilities out, each input checked in the graph with a message naming it.

TF Serving feeds a request's tensors straight into the graph (no shape check against the
signature), so the checks are graph ops: the signatures declare their inputs with unknown
rank and check rank, channels, non-empty, matching batch and size (encoded images: PNG/JPEG,
16-bit PNG for uint16 modalities) before the model sees them. The dtype is the signature's
own check (TF and TF Serving refuse another dtype).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from ssma_tf.data.normalize import normalize
from ssma_tf.data.schema import DatasetInfo, decode_example, encode_example
from ssma_tf.evaluation.inference import padded_probabilities

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_BIT_DEPTH_OFFSET = 24  # 8 signature bytes, IHDR length + type, width, height, bit depth


def predictions(model, raw, graph_specs, depth_max):
    """{"labels": int32 [B,H,W], "probabilities": float32 [B,H,W,C]} of raw sensor tensors:
    normalised per `graph_specs`, padded to a multiple of 32 and cropped back."""
    probabilities = padded_probabilities(model, normalize(raw, graph_specs, depth_max))
    labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {"labels": labels, "probabilities": probabilities}


def _guarded(values, checks, placeholders):
    """`values()` once every (condition, message) of `checks` holds, else an error carrying
    the first failing message. The conditions are computed with ops that cannot fail, and
    the failing branch returns `placeholders()` (valid stand-ins, same structure and dtypes),
    so nothing downstream fails first with a message of its own (with grappler on, control
    dependencies on plain asserts did not stop that in TF 2.21)."""
    conditions = tf.stack([tf.reduce_all(condition) for condition, _ in checks])
    messages = tf.constant([message for _, message in checks])

    def fail():
        first = tf.argmin(tf.cast(conditions, tf.int32))
        failed = tf.debugging.Assert(conditions[first], [tf.gather(messages, first)])
        with tf.control_dependencies([failed]):
            return tf.nest.map_structure(tf.identity, placeholders())

    return tf.cond(tf.reduce_all(conditions), values, fail)


def _shape(x, rank):
    """tf.shape(x) cut or padded with -1 to `rank` entries: safe for any input rank. (The
    checked values are reshaped to it: with tf.ensure_shape instead, the optimised graph
    skipped the rank check in TF 2.21.)"""
    return tf.concat([tf.shape(x), tf.fill([rank], -1)], 0)[:rank]


def _together_checks(images):
    """(condition, message): each input has the first one's batch size, height and width."""
    names = list(images)
    first = _shape(images[names[0]], 4)
    checks = []
    for name in names[1:]:
        shape = _shape(images[name], 4)
        checks.append((tf.equal(shape[0], first[0]),
                       f"input {name}: batch size differs from input {names[0]}"))
        checks.append((tf.equal(shape[1:3], first[1:3]),
                       f"input {name}: height and width differ from input {names[0]}"))
    return checks


def _image_placeholders(images):
    return {name: tf.zeros([1, 1, 1, x.shape[-1]], x.dtype) for name, x in images.items()}


def _checked_together(images):
    """`images` {name: [B,H,W,C]}, asserted to share batch size, height and width."""
    if len(images) == 1:
        return images
    return _guarded(lambda: images, _together_checks(images),
                    lambda: _image_placeholders(images))


def checked_tensors(inputs, channels):
    """{name: [B,H,W,C] tensor} checked per input (rank, channels, non-empty) and together;
    `channels`: {name: C}, in the order the messages compare inputs."""
    inputs = {name: inputs[name] for name in channels}
    checks = []
    for name, c in channels.items():
        x = inputs[name]
        shape = _shape(x, 4)
        checks += [(tf.equal(tf.rank(x), 4),
                    f"input {name}: expected rank 4 [batch, height, width, {c}]"),
                   (tf.equal(shape[3], c), f"input {name}: expected {c} channels"),
                   (shape[:3] > 0,
                    f"input {name}: empty (batch, height and width must be at least 1)")]
    checks += _together_checks(inputs)
    return _guarded(
        lambda: {n: tf.reshape(x, tf.concat([_shape(x, 3), [channels[n]]], 0))
                 for n, x in inputs.items()},
        checks,
        lambda: {n: tf.zeros([1, 1, 1, c], inputs[n].dtype) for n, c in channels.items()})


def _string_checks(name, data, what):
    """(condition, message): `data` is a non-empty vector of strings [B]."""
    return [(tf.equal(tf.rank(data), 1), f"input {name}: expected a vector [batch] of {what}"),
            (tf.size(data) > 0, f"input {name}: empty batch")]


def _stacked(ragged, name, spec):
    """[B, (H), (W), C] ragged images as one tensor; asserts they share one size."""
    heights, widths = ragged.row_lengths(), ragged.values.row_lengths()
    message = f"input {name}: the images of one batch must have the same size"
    checks = [(tf.equal(tf.reduce_min(n), tf.reduce_max(n)), message) for n in (heights, widths)]
    return _guarded(lambda: ragged.to_tensor(), checks,
                    lambda: tf.zeros([1, 1, 1, spec.channels], tf.as_dtype(spec.dtype)))


def _ragged_spec(spec):
    return tf.RaggedTensorSpec([None, None, spec.channels], tf.as_dtype(spec.dtype), 1)


def _starts_with(data, magic, offset=0):
    """Whether each string holds `magic` at `offset` (short strings padded, so never fails)."""
    padded = data + b"\0" * (offset + len(magic))
    return tf.equal(tf.strings.substr(padded, offset, len(magic)), magic)


def decode_images(name, data, spec):
    """Encoded images [B] -> uint8|uint16 [B,H,W,C] per `spec`: PNG or JPEG for 8-bit
    modalities, 16-bit PNG (stored units) for uint16 ones."""
    checks = _string_checks(name, data, "encoded images")
    flat = tf.reshape(data, [-1])
    png = _starts_with(flat, PNG_MAGIC)
    dtype = tf.as_dtype(spec.dtype)
    if spec.dtype == "uint16":
        checks.append((png & _starts_with(flat, b"\x10", PNG_BIT_DEPTH_OFFSET),
                       f"input {name}: expected 16-bit PNGs ({spec.name} in stored units)"))

        def decode(one):
            return tf.io.decode_png(one, channels=spec.channels, dtype=tf.uint16)
    else:
        checks.append((png | _starts_with(flat, JPEG_MAGIC),
                       f"input {name}: expected PNG or JPEG images"))

        def decode(one):
            return tf.io.decode_image(one, channels=spec.channels, dtype=tf.uint8,
                                      expand_animations=False)
    data = _guarded(lambda: tf.reshape(data, [-1]), checks,
                    lambda: tf.io.encode_png(tf.zeros([1, 1, spec.channels], dtype))[None])
    ragged = tf.map_fn(lambda one: tf.RaggedTensor.from_tensor(decode(one)), data,
                       fn_output_signature=_ragged_spec(spec))
    return _stacked(ragged, name, spec)


def decode_records(records, specs):
    """Serialized records of our format [B] -> {modality: uint8|uint16 [B,H,W,C]}, decoded
    as the data pipeline decodes them (PNG or raw pixels, as each record's `format` says)."""
    records = _guarded(lambda: tf.reshape(records, [-1]),
                       _string_checks("records", records, "serialized records"),
                       lambda: tf.constant([encode_example(
                           {n: np.zeros((1, 1, s.channels), s.dtype) for n, s in specs.items()},
                           None, [])]))
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
    return {name: _stacked(ragged[name], name, spec) for name, spec in specs.items()}


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
        images = {name: decode_images(name, inputs[name], spec)
                  for name, spec in record_specs.items()}
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
