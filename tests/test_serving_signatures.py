"""The image_bytes and records signatures against serving_default, requests built as TF
Serving's REST API and gRPC PredictRequest carry them, and the inputs checked in the graph."""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from eval_models import depth_threshold_model
from ssma_tf.data.schema import ModalitySpec, encode_example
from ssma_tf.export.serving import export_saved_model

SPECS = {
    "rgb": ModalitySpec("rgb", "color", 3, "uint8"),
    "depth": ModalitySpec("depth", "raw", 1, "uint16", depth_scale=0.001),
}
InvalidArgument = tf.errors.InvalidArgumentError


def _images(batch=2, height=20, width=28, seed=0):
    """Raw sensor arrays on which the tiny model predicts all three classes."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 120, (batch, height, width, 3), dtype=np.uint8)
    rgb[:, : height // 3, :, 0] = 255  # bright red -> class 2
    depth = rng.integers(0, 6000, (batch, height, width, 1), dtype=np.uint16)
    depth[:, :, : width // 3] = 0  # holes
    return {"rgb": rgb, "depth": depth}


def _png(image):
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("serving") / "segmenter")
    return export_saved_model(depth_threshold_model(), SPECS, folder)


@pytest.fixture(scope="module")
def signatures(exported):
    return tf.saved_model.load(exported).signatures


@pytest.fixture(scope="module")
def reference(signatures):
    """The raw images and serving_default's outputs for them."""
    raw = _images()
    out = signatures["serving_default"](rgb=tf.constant(raw["rgb"]),
                                        depth=tf.constant(raw["depth"]))
    labels = out["labels"].numpy()
    assert set(np.unique(labels)) == {0, 1, 2}
    return raw, labels, out["probabilities"].numpy()


def test_image_bytes_png_and_16_bit_depth_match_serving_default(signatures, reference):
    raw, labels, probabilities = reference
    out = signatures["image_bytes"](
        rgb=tf.constant([_png(x) for x in raw["rgb"]]),
        depth=tf.constant([_png(x) for x in raw["depth"]]))
    np.testing.assert_array_equal(out["labels"].numpy(), labels)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-6)


def test_image_bytes_jpeg_matches_serving_default_on_the_decoded_jpeg(signatures, reference):
    raw = reference[0]
    jpegs = [tf.io.encode_jpeg(x, quality=90).numpy() for x in raw["rgb"]]
    decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in jpegs])
    assert not np.array_equal(decoded, raw["rgb"])  # lossy: the decoded pixels are the input
    tensors = signatures["serving_default"](rgb=tf.constant(decoded),
                                            depth=tf.constant(raw["depth"]))
    out = signatures["image_bytes"](rgb=tf.constant(jpegs),
                                    depth=tf.constant([_png(x) for x in raw["depth"]]))
    np.testing.assert_array_equal(out["labels"].numpy(), tensors["labels"].numpy())


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_records_match_serving_default(signatures, reference, image_format):
    raw, labels, probabilities = reference
    records = [encode_example({"rgb": raw["rgb"][i], "depth": raw["depth"][i]},
                              np.zeros(labels.shape[1:], np.uint8), ["a.png", "b.png"],
                              image_format=image_format) for i in range(len(labels))]
    out = signatures["records"](records=tf.constant(records))
    np.testing.assert_array_equal(out["labels"].numpy(), labels)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-6)


def _rest_inputs(body, signature):
    """The tensors TF Serving's REST predict makes of a columnar request body: a {"b64": ...}
    object is the decoded bytes of a string tensor, numbers take the input's dtype."""
    def value(item):
        if isinstance(item, dict):
            return base64.b64decode(item["b64"])
        return [value(x) for x in item] if isinstance(item, list) else item

    request = json.loads(body)
    specs = signature.structured_input_signature[1]
    return {name: tf.constant(value(data), specs[name].dtype)
            for name, data in request["inputs"].items()}


def test_rest_request_bodies_through_their_signatures(signatures, reference):
    raw, labels, _ = reference
    b64 = [base64.b64encode(_png(x)).decode() for x in raw["rgb"]]
    depth = [base64.b64encode(_png(x)).decode() for x in raw["depth"]]
    body = json.dumps({"signature_name": "image_bytes",
                       "inputs": {"rgb": [{"b64": s} for s in b64],
                                  "depth": [{"b64": s} for s in depth]}})
    assert body.startswith('{"signature_name": "image_bytes", "inputs": {"rgb": [{"b64": "')
    signature = signatures[json.loads(body)["signature_name"]]
    out = signature(**_rest_inputs(body, signature))
    np.testing.assert_array_equal(out["labels"].numpy(), labels)
    record = encode_example({"rgb": raw["rgb"][1], "depth": raw["depth"][1]}, None, ["x"])
    body = json.dumps({"signature_name": "records",
                       "inputs": {"records": [{"b64": base64.b64encode(record).decode()}]}})
    out = signatures["records"](**_rest_inputs(body, signatures["records"]))
    np.testing.assert_array_equal(out["labels"].numpy(), labels[1:])
    body = json.dumps({"inputs": {name: x[:1].tolist() for name, x in raw.items()}})
    out = signatures["serving_default"](**_rest_inputs(body, signatures["serving_default"]))
    np.testing.assert_array_equal(out["labels"].numpy(), labels[:1])


def test_grpc_predict_request_tensors_through_the_signature(signatures, reference):
    raw, labels, _ = reference
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "segmenter"
    request.model_spec.signature_name = "image_bytes"
    for name, images in raw.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto([_png(x) for x in images]))
    received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert received.inputs["depth"].dtype == tf.string.as_datatype_enum
    signature = signatures[received.model_spec.signature_name]
    out = signature(**{name: tf.constant(tf.make_ndarray(proto))
                       for name, proto in received.inputs.items()})
    np.testing.assert_array_equal(out["labels"].numpy(), labels)
    tensors = predict_pb2.PredictRequest()
    for name, images in raw.items():
        tensors.inputs[name].CopyFrom(tf.make_tensor_proto(images))
    out = signatures["serving_default"](**{name: tf.constant(tf.make_ndarray(proto))
                                           for name, proto in tensors.inputs.items()})
    np.testing.assert_array_equal(out["labels"].numpy(), labels)


@pytest.mark.parametrize("change, message", [
    (lambda r: {**r, "rgb": r["rgb"][..., 0]}, r"input rgb: expected rank 4"),
    (lambda r: {**r, "rgb": np.concatenate([r["rgb"], r["rgb"][..., :1]], -1)},
     r"input rgb: expected 3 channels"),
    (lambda r: {**r, "depth": r["depth"][:, :, :-4]},
     r"input depth: height and width differ from input rgb"),
    (lambda r: {**r, "depth": r["depth"][:1]}, r"input depth: batch size differs"),
    (lambda r: {name: x[:0] for name, x in r.items()}, r"input rgb: empty"),
])
def test_serving_default_checks_name_the_input(signatures, change, message):
    raw = change(_images(height=8, width=8))
    with pytest.raises(InvalidArgument, match=message):
        signatures["serving_default"](**{name: tf.constant(x) for name, x in raw.items()})


def test_serving_default_refuses_another_dtype(signatures):
    raw = _images(height=8, width=8)
    with pytest.raises(InvalidArgument, match="uint8"):
        signatures["serving_default"](rgb=tf.constant(raw["rgb"], tf.float32),
                                      depth=tf.constant(raw["depth"]))


def test_image_bytes_checks_name_the_input(signatures):
    raw = _images(height=8, width=8)
    rgb = [_png(x) for x in raw["rgb"]]
    depth = [_png(x) for x in raw["depth"]]
    serve = signatures["image_bytes"]
    cases = [
        (dict(rgb=rgb, depth=[_png(x.astype(np.uint8)) for x in raw["depth"]]),
         r"input depth: expected 16-bit PNGs"),
        (dict(rgb=[b"GIF89a", b""], depth=depth), r"input rgb: expected PNG or JPEG"),
        (dict(rgb=[rgb[0], _png(np.zeros((8, 9, 3), np.uint8))], depth=depth),
         r"input rgb: the images of one batch must have the same size"),
        (dict(rgb=[rgb], depth=depth), r"input rgb: expected a vector \[batch\]"),
        (dict(rgb=np.zeros([0], object), depth=depth), r"input rgb: empty batch"),
        (dict(rgb=rgb, depth=depth[:1]), r"input depth: batch size differs"),
        (dict(rgb=rgb, depth=[_png(x[:4]) for x in raw["depth"]]),
         r"input depth: height and width differ from input rgb"),
    ]
    for inputs, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            serve(**{name: tf.constant(value, tf.string) for name, value in inputs.items()})


def test_records_checks_name_the_input(signatures):
    raw = _images(height=8, width=8)
    small = _images(batch=1, height=8, width=6)
    good = encode_example({"rgb": raw["rgb"][0], "depth": raw["depth"][0]}, None, ["x"])
    other = encode_example({"rgb": small["rgb"][0], "depth": small["depth"][0]}, None, ["x"])
    rgb_only = encode_example({"rgb": raw["rgb"][0]}, None, ["x"])
    serve = signatures["records"]
    with pytest.raises(InvalidArgument, match=r"input rgb: the images of one batch"):
        serve(records=tf.constant([good, other]))
    with pytest.raises(InvalidArgument, match="modality/depth"):
        serve(records=tf.constant([rgb_only]))
    with pytest.raises(InvalidArgument, match=r"input records: empty batch"):
        serve(records=tf.constant([], tf.string))


def test_checks_hold_when_fed_as_tf_serving_feeds(exported, reference):
    """TF Serving runs the signature_def's tensors in a session, feeding the request's tensors
    unchecked against the declared shapes: the graph's own checks still answer."""
    raw, labels, _ = reference
    pngs = {name: [_png(x) for x in raw[name]] for name in raw}
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], exported)
        signature = meta.signature_def["image_bytes"]
        feeds = {signature.inputs[name].name: pngs[name] for name in raw}
        fetched = session.run(signature.outputs["labels"].name, feeds)
        np.testing.assert_array_equal(fetched, labels)
        signature = meta.signature_def["serving_default"]
        feeds = {signature.inputs["rgb"].name: raw["rgb"][..., :2],
                 signature.inputs["depth"].name: raw["depth"]}
        with pytest.raises(InvalidArgument, match="input rgb: expected 3 channels"):
            session.run(signature.outputs["labels"].name, feeds)
