"""Record schema: specs, sidecar, shard names, encode/decode round trips, legacy SSMA records."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.data import schema
from ssma_tf.data.schema import DatasetInfo, ModalitySpec
from ssma_tf.errors import InputError

RGB = ModalitySpec("rgb", "color", 3, "uint8")
DEPTH = ModalitySpec("depth", "raw", 1, "uint16", 0.001)


def _arrays(h=8, w=12, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    label = rng.integers(0, 5, (h, w), dtype=np.uint8)
    return rgb, depth, label


def test_stem_sidecar_and_shard_names():
    assert schema.record_stem("out/train.tfrecords") == "out/train"
    assert schema.record_stem("out/train.tfrecord") == "out/train"
    assert schema.record_stem("out/train") == "out/train"
    assert schema.sidecar_path("out/train.tfrecords") == "out/train.info.json"
    assert schema.shard_paths("out/train.tfrecords", 1) == ["out/train.tfrecords"]
    assert schema.shard_paths("out/train.tfrecords", 3) == [
        "out/train-00000-of-00003.tfrecord", "out/train-00001-of-00003.tfrecord",
        "out/train-00002-of-00003.tfrecord"]
    with pytest.raises(InputError, match="shards"):
        schema.shard_paths("x.tfrecords", 0)


def test_spec_and_info_json_round_trip(tmp_path):
    assert RGB.photometric and not DEPTH.photometric
    assert ModalitySpec.from_json(DEPTH.to_json()) == DEPTH
    info = DatasetInfo([RGB, DEPTH], True, 3, ["a.tfrecords"], num_classes=5,
                       class_histogram=[1] * 256, command="convert x", image_format="raw")
    path = tmp_path / "a.info.json"
    info.write(path)
    assert DatasetInfo.read(path) == info
    assert info.spec("depth") == DEPTH
    with pytest.raises(InputError, match="no modality 'hha'"):
        info.spec("hha")
    with pytest.raises(InputError, match="unknown encoding"):
        ModalitySpec("x", "sepia", 3, "uint8")
    (tmp_path / "bad.info.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.info.json"):
        DatasetInfo.read(tmp_path / "bad.info.json")


def test_encode_decode_round_trip_keeps_16_bit_and_rgb(tmp_path):
    rgb, depth, label = _arrays()
    serialized = schema.encode_example({"rgb": rgb, "depth": depth}, label,
                                       ["a.png", "b.png", "l.png"])
    info = DatasetInfo([RGB, DEPTH], True, 1, [])
    out = schema.decode_example(tf.constant(serialized), info)
    assert out["rgb"].dtype == tf.uint8 and out["depth"].dtype == tf.uint16
    np.testing.assert_array_equal(out["rgb"].numpy(), rgb)
    np.testing.assert_array_equal(out["depth"].numpy()[..., 0], depth)
    np.testing.assert_array_equal(out["label"].numpy()[..., 0], label)
    example = tf.train.Example.FromString(serialized)
    assert example.features.feature["height"].int64_list.value == [8]
    assert (list(example.features.feature["source"].bytes_list.value)
            == [b"a.png", b"b.png", b"l.png"])


def test_raw_format_round_trip_8_and_16_bit_is_uncompressed():
    rgb, depth, label = _arrays()
    depth[0, 0] = 0x0102  # byte order matters
    arrays = {"rgb": rgb, "depth": depth}
    raw = schema.encode_example(arrays, label, ["a.png"], image_format="raw")
    png = schema.encode_example(arrays, label, ["a.png"])
    features = tf.train.Example.FromString(raw).features.feature
    assert features["format"].bytes_list.value == [b"raw"]
    assert tf.train.Example.FromString(png).features.feature["format"].bytes_list.value == [b"png"]
    assert features["modality/depth"].bytes_list.value[0] == depth.astype("<u2").tobytes()
    assert features["label"].bytes_list.value[0] == label.tobytes()
    info = DatasetInfo([RGB, DEPTH], True, 1, [], image_format="raw")
    out = schema.decode_example(tf.constant(raw), info)
    assert out["rgb"].dtype == tf.uint8 and out["depth"].dtype == tf.uint16
    np.testing.assert_array_equal(out["rgb"].numpy(), rgb)
    np.testing.assert_array_equal(out["depth"].numpy()[..., 0], depth)
    np.testing.assert_array_equal(out["label"].numpy()[..., 0], label)
    ds = tf.data.Dataset.from_tensors(raw).map(lambda s: schema.decode_example(s, info))
    assert ds.element_spec["depth"].shape.as_list() == [None, None, 1]
    with pytest.raises(InputError, match="image format.*'jpeg'"):
        schema.encode_example(arrays, label, [], image_format="jpeg")
    with pytest.raises(InputError, match="image format"):
        DatasetInfo([RGB], True, 1, [], image_format="gif")


def test_old_sidecar_without_image_format_reads_as_png(tmp_path):
    path = tmp_path / "old.info.json"
    info = DatasetInfo([RGB], True, 1, ["old.tfrecords"])
    d = info.to_json()
    del d["image_format"]
    path.write_text(json.dumps(d))
    assert DatasetInfo.read(path).image_format == "png"


def test_old_sidecar_without_image_size_and_file_counts(tmp_path):
    path = tmp_path / "old.info.json"
    d = DatasetInfo([RGB], True, 3, ["old.tfrecords"]).to_json()
    del d["image_size"], d["file_examples"]
    path.write_text(json.dumps(d))
    info = DatasetInfo.read(path)
    assert info.image_size is None and info.file_examples is None
    assert info.expected_examples("old.tfrecords") is None


def test_expected_examples_per_file_and_in_a_shard_glob(tmp_path):
    rgb, _, label = _arrays()
    record = tmp_path / "train.tfrecords"
    shards = schema.shard_paths(str(record), 2)
    for p, n in zip(shards, (2, 1)):
        with tf.io.TFRecordWriter(p) as w:
            for _ in range(n):
                w.write(schema.encode_example({"rgb": rgb}, label, []))
    DatasetInfo([RGB], True, 3, [p.split("/")[-1] for p in shards], file_examples=[2, 1],
                image_size={"min": [8, 12], "max": [8, 12]}).write(schema.sidecar_path(record))
    _, info = schema.resolve_records(str(record))
    assert [info.expected_examples(p) for p in shards] == [2, 1]
    assert info.image_size == {"min": [8, 12], "max": [8, 12]}
    assert info.expected_examples(str(tmp_path / "other.tfrecord")) is None
    files, info = schema.resolve_records(str(tmp_path / "train-0000[1]-of-*.tfrecord"))
    assert files == shards[1:] and info.file_examples == [1] and info.num_examples == 1
    assert info.expected_examples(shards[1]) == 1


def test_decode_is_traceable_in_tf_data_and_unlabeled(tmp_path):
    rgb, depth, _ = _arrays()
    path = str(tmp_path / "u.tfrecords")
    with tf.io.TFRecordWriter(path) as w:
        w.write(schema.encode_example({"rgb": rgb}, None, ["a.png"]))
    info = DatasetInfo([RGB], False, 1, [path])
    ds = tf.data.TFRecordDataset(path).map(lambda s: schema.decode_example(s, info))
    (item,) = list(ds)
    assert set(item) == {"rgb"}
    np.testing.assert_array_equal(item["rgb"].numpy(), rgb)
    assert ds.element_spec["rgb"].shape.as_list() == [None, None, 3]


def test_encode_rejects_bad_inputs():
    rgb, depth, label = _arrays()
    with pytest.raises(InputError, match="'depth'"):
        schema.encode_example({"rgb": rgb, "depth": depth[:4]}, label, [])
    with pytest.raises(InputError, match="label"):
        schema.encode_example({"rgb": rgb}, rgb, [])
    with pytest.raises(InputError, match="float32"):
        schema.encode_example({"rgb": rgb.astype(np.float32)}, None, [])


def _write_legacy(path, samples, two=True):
    with tf.io.TFRecordWriter(str(path)) as w:
        for rgb, second, label in samples:
            h, w_ = label.shape
            feat = {"height": tf.train.Feature(int64_list=tf.train.Int64List(value=[h])),
                    "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[w_])),
                    "modality1": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[rgb[..., ::-1].tobytes()])),
                    "label": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[label.tobytes()]))}
            if two:
                feat["modality2"] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[second[..., ::-1].tobytes()]))
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())


def test_legacy_ssma_record_decodes_bgr_to_rgb(tmp_path):
    rgb, _, label = _arrays()
    jet = np.ascontiguousarray(rgb[::-1])
    path = tmp_path / "ssma_train.tfrecords"
    _write_legacy(path, [(rgb, jet, label)])
    files, info = schema.resolve_records(str(path))
    assert files == [str(path)] and info.legacy and info.labeled
    assert info.modality_names == ["rgb", "depth"] and info.ignore_label == 0
    out = next(iter(tf.data.TFRecordDataset(files).map(lambda s: schema.decode_example(s, info))))
    np.testing.assert_array_equal(out["rgb"].numpy(), rgb)
    np.testing.assert_array_equal(out["depth"].numpy(), jet)
    np.testing.assert_array_equal(out["label"].numpy()[..., 0], label)


def test_legacy_adapnet_record_has_one_modality_and_names_can_be_given(tmp_path):
    rgb, _, label = _arrays()
    path = tmp_path / "adapnet.tfrecords"
    _write_legacy(path, [(rgb, None, label)], two=False)
    _, info = schema.resolve_records(str(path))
    assert info.modality_names == ["rgb"]
    _, info = schema.resolve_records(str(path), legacy_modalities=["image"])
    assert info.modality_names == ["image"] and info.modalities[0].encoding == "color"


def test_resolve_records_with_sidecar_shards_and_glob(tmp_path):
    rgb, _, label = _arrays()
    record = tmp_path / "train.tfrecords"
    shards = schema.shard_paths(str(record), 2)
    for p in shards:
        with tf.io.TFRecordWriter(p) as w:
            w.write(schema.encode_example({"rgb": rgb}, label, []))
    DatasetInfo([RGB], True, 2, [p.split("/")[-1] for p in shards]).write(
        schema.sidecar_path(record))
    files, info = schema.resolve_records(str(record))
    assert files == shards and info.num_examples == 2 and not info.legacy
    files, info = schema.resolve_records(str(tmp_path / "train-0000[0]-of-*.tfrecord"))
    assert files == shards[:1] and info.num_examples == 1
    with pytest.raises(InputError, match="no records found at .*nothing"):
        schema.resolve_records(str(tmp_path / "nothing.tfrecords"))
