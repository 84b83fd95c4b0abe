"""Converter: round trips, shards, sidecar, encodings, label maps, atomic failure, CLI."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.data import schema
from ssma_tf.data.convert import convert, parse_encodings
from ssma_tf.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 8, 12


def _sample(folder, i, rng):
    """Write rgb (8-bit), depth (16-bit) and label PNGs; return their arrays (RGB order)."""
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    label = rng.integers(0, 4, (H, W), dtype=np.uint8)
    label[0, 0] = 255
    os.makedirs(folder / "img", exist_ok=True)
    cv2.imwrite(str(folder / f"img/rgb {i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / f"img/d{i}.png"), depth)
    cv2.imwrite(str(folder / f"img/l{i}.png"), label)
    return rgb, depth, label


def _dataset(folder, n=5, seed=0):
    rng = np.random.default_rng(seed)
    samples = [_sample(folder, i, rng) for i in range(n)]
    lines = [f"img/rgb {i}.png img/d{i}.png img/l{i}.png  \r\n" for i in range(n)]
    (folder / "train.txt").write_bytes("".join(lines).encode())
    return str(folder / "train.txt"), samples


def _read(record):
    files, info = schema.resolve_records(record)
    ds = tf.data.TFRecordDataset(files)
    out = []
    for s in ds:
        decoded = {k: v.numpy() for k, v in schema.decode_example(s, info).items()}
        source = tf.train.Example.FromString(s.numpy()).features.feature["source"].bytes_list.value
        out.append((source[0].decode(), decoded))
    return info, sorted(out, key=lambda item: item[0])


@pytest.mark.parametrize("workers, shards, image_format", [(1, 1, "png"), (2, 2, "png"),
                                                           (1, 2, "raw")])
def test_round_trip_exact_pixels_shards_and_sidecar(tmp_path, workers, shards, image_format):
    lst, samples = _dataset(tmp_path)
    record = str(tmp_path / "out" / "train.tfrecords")
    convert(lst, record, num_classes=4, num_shards=shards, workers=workers, command="cmd",
            image_format=image_format)
    expected = sorted(["train.tfrecords"] if shards == 1 else
                      ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"])
    assert sorted(os.listdir(tmp_path / "out")) == sorted(expected + ["train.info.json"])
    info, decoded = _read(record)
    assert info.num_examples == 5 and info.labeled and info.command == "cmd"
    assert info.image_format == image_format
    assert info.image_size == {"min": [H, W], "max": [H, W]}
    assert info.file_examples == ([5] if shards == 1 else [3, 2])      # round robin
    assert [m.to_json() for m in info.modalities] == [
        {"name": "rgb", "encoding": "color", "channels": 3, "dtype": "uint8", "depth_scale": 0.001},
        {"name": "depth", "encoding": "raw", "channels": 1, "dtype": "uint16",
         "depth_scale": 0.001}]
    hist = np.zeros(256, int)
    for (source, out), (rgb, depth, label) in zip(decoded, samples):
        assert source.endswith("rgb " + source.split("rgb ")[-1])
        np.testing.assert_array_equal(out["rgb"], rgb)
        np.testing.assert_array_equal(out["depth"][..., 0], depth)
        np.testing.assert_array_equal(out["label"][..., 0], label)
        hist += np.bincount(label.ravel(), minlength=256)
    assert info.class_histogram == hist.tolist()


def test_sidecar_image_size_is_the_range_over_the_examples(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for i, (h, w) in enumerate([(8, 12), (10, 6), (9, 7)]):
        cv2.imwrite(str(tmp_path / f"c{i}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
        cv2.imwrite(str(tmp_path / f"l{i}.png"), np.zeros((h, w), np.uint8))
        lines.append(f"c{i}.png l{i}.png\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    record = str(tmp_path / "out" / "sizes.tfrecords")
    convert(str(tmp_path / "list.txt"), record, modalities=("rgb",), workers=1)
    _, info = schema.resolve_records(record)
    assert info.image_size == {"min": [8, 6], "max": [10, 12]}


def test_unlabeled_computed_encodings_and_json_label_map(tmp_path):
    lst, samples = _dataset(tmp_path, n=2)
    # columns: rgb, depth-as-hha, depth-as-jet (no label)
    text = "".join(f"img/rgb {i}.png img/d{i}.png img/d{i}.png\n" for i in range(2))
    (tmp_path / "u.txt").write_text(text)
    record = str(tmp_path / "u.tfrecords")
    info = convert(str(tmp_path / "u.txt"), record, modalities=["rgb", "hha", "jet"],
                   unlabeled=True, encodings_by_name="hha=hha,jet=jet", intrinsics="10,10,6,4",
                   workers=1)
    assert not info.labeled and info.class_histogram is None
    assert [(m.name, m.encoding, m.channels) for m in info.modalities] == [
        ("rgb", "color", 3), ("hha", "hha", 3), ("jet", "jet", 3)]
    _, decoded = _read(record)
    assert set(decoded[0][1]) == {"rgb", "hha", "jet"} and decoded[0][1]["hha"].shape == (H, W, 3)

    (tmp_path / "map.json").write_text(json.dumps({"0": 1, "1": 0, "2": 2, "3": 2}))
    convert(lst, str(tmp_path / "m.tfrecords"), label_map=str(tmp_path / "map.json"),
            num_classes=3, workers=1)
    _, decoded = _read(str(tmp_path / "m.tfrecords"))
    label = samples[0][2]
    expected = np.array([1, 0, 2, 2] + [255] * 252, np.uint8)[label]
    np.testing.assert_array_equal(decoded[0][1]["label"][..., 0], expected)


def test_label_map_from_dataset_registry(tmp_path):
    lst, _ = _dataset(tmp_path, n=1)
    raw = np.zeros((H, W), np.uint8)
    raw[:, :4], raw[:, 4:8], raw[:, 8:] = 7, 26, 3          # cityscapes road, car, out of roi
    cv2.imwrite(str(tmp_path / "img/l0.png"), raw)
    convert(lst, str(tmp_path / "c.tfrecords"), label_map="cityscapes", num_classes=19, workers=1)
    _, decoded = _read(str(tmp_path / "c.tfrecords"))
    label = decoded[0][1]["label"][..., 0]
    assert (label[:, :4] == 0).all() and (label[:, 4:8] == 13).all() and (label[:, 8:] == 255).all()
    with pytest.raises(InputError, match="nosuchset"):
        convert(lst, str(tmp_path / "d.tfrecords"), label_map="nosuchset")


def test_parse_encodings_defaults_and_errors():
    assert parse_encodings("", ["rgb", "depth", "evi"]) == {"rgb": "color", "depth": "raw",
                                                            "evi": "image"}
    assert parse_encodings("depth=jet", ["rgb", "depth"])["depth"] == "jet"
    with pytest.raises(InputError, match="'nir=raw'"):
        parse_encodings("nir=raw", ["rgb", "depth"])
    with pytest.raises(InputError, match="unknown encoding 'sepia'"):
        parse_encodings("depth=sepia", ["rgb", "depth"])


def _break(folder, kind):
    """Make the dataset bad in one way; return the expected message regex."""
    lst = folder / "train.txt"
    if kind == "missing":
        os.remove(folder / "img/d3.png")
        return r"train.txt:4: depth file not found: .*img/d3.png"
    if kind == "corrupt":
        (folder / "img/d2.png").write_bytes(b"\x89PNG not really")
        return r"train.txt:3: cannot read image .*img/d2.png"
    if kind == "size":
        cv2.imwrite(str(folder / "img/d1.png"), np.zeros((H, W + 1), np.uint16))
        return r"train.txt:2: depth .*img/d1.png is 13x8 but .*rgb 1.png is 12x8"
    if kind == "label_channels":
        cv2.imwrite(str(folder / "img/l4.png"), np.zeros((H, W, 3), np.uint8))
        return r"train.txt:5: label .*img/l4.png must be one channel"
    if kind == "label_range":
        cv2.imwrite(str(folder / "img/l0.png"), np.full((H, W), 7, np.uint8))
        return r"train.txt:1: label .*img/l0.png has ids \[7\] >= num_classes 4"
    if kind == "columns":
        lst.write_text(lst.read_text() + "img/d0.png img/l0.png\n")
        return r"train.txt:6: expected 3 columns, found 2"
    if kind == "empty":
        lst.write_text("\n  \n")
        return r"train.txt: list file has no samples"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "size", "label_channels", "label_range",
                                  "columns", "empty"])
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_names_line_and_path_and_leaves_nothing(tmp_path, kind, workers):
    lst, _ = _dataset(tmp_path)
    message = _break(tmp_path, kind)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        convert(lst, str(out / "train.tfrecords"), num_classes=4, num_shards=2, workers=workers)
    assert not out.exists() or os.listdir(out) == []


def test_unknown_image_format_is_a_clear_error(tmp_path):
    lst, _ = _dataset(tmp_path, n=1)
    with pytest.raises(InputError, match="--image-format: .*png, raw.*'jpeg'"):
        convert(lst, str(tmp_path / "out.tfrecords"), image_format="jpeg")
    assert not (tmp_path / "out.tfrecords").exists()


def test_hha_without_intrinsics_is_a_clear_error(tmp_path):
    lst, _ = _dataset(tmp_path, n=1)
    with pytest.raises(InputError, match="'depth' uses encoding hha.*--intrinsics"):
        convert(lst, str(tmp_path / "out.tfrecords"), encodings_by_name={"depth": "hha"})
    assert not (tmp_path / "out.tfrecords").exists()


def test_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    lst, _ = _dataset(tmp_path, n=1)
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    with pytest.raises(InputError, match="cannot create the folder .*blocker: File exists"):
        convert(lst, str(tmp_path / "blocker" / "out.tfrecords"))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "convert_to_tfrecords.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_cli_ssma_flags_and_error_exit_code(tmp_path):
    lst, samples = _dataset(tmp_path, n=3)
    record = str(tmp_path / "train.tfrecords")
    run = _cli("-f", lst, "-r", record, "--ignore-label=255", "--num-classes", "4",
               "--workers", "2", "--image-format", "raw")
    assert run.returncode == 0, run.stderr
    info, decoded = _read(record)
    assert info.num_examples == 3 and "convert_to_tfrecords.py -f" in info.command
    assert info.image_format == "raw"
    np.testing.assert_array_equal(decoded[0][1]["depth"][..., 0], samples[0][1])
    run = _cli("--file", lst, "--record", str(tmp_path / "x.tfrecords"), "--num-classes", "2")
    assert run.returncode == 2
    assert "error: " in run.stderr and "train.txt:1: label" in run.stderr
    assert not (tmp_path / "x.tfrecords").exists() and not (tmp_path / "x.info.json").exists()
