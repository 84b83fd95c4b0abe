"""Faults that end in one clear line and lose nothing (issue 18), in this process: full disk
while saving (injected ENOSPC; a real small tmpfs where it can be mounted), a checkpoint that
does not fit the config, corrupt and truncated records, config values out of range, labels
that do not fit num_classes, wrong-but-plausible images, outputs that are inputs, locks,
stale temps and the CLI's one-line ending. The signal and concurrency cases with real
processes are in test_faults_signals.py."""

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.cli import guarded
from ssma_tf.config import config_from_dict
from ssma_tf.data import schema
from ssma_tf.data.convert import convert, read_image
from ssma_tf.data.pipeline import check_crop, check_labels, report_readable, train_dataset
from ssma_tf.errors import ConfigError, InputError
from ssma_tf.io_utils import LOCK_NAME, FolderLock, remove_stale_temps, temp_path
from ssma_tf.training import compatibility, trainer
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_config_file, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checksums(folder):
    """{relative path: sha256} of every file under `folder`."""
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def dead_pid():
    """The id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AdapNet++ run trained 2 steps: (records, checkpoint folder)."""
    tmp = tmp_path_factory.mktemp("trained")
    records = write_records(tmp)
    config = tiny_config(tmp, records, max_iteration=2, save_step=2, summary_step=0)
    return records, train(config)


# --- 2: a failed save is all-or-nothing -------------------------------------------------

def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_no_partial(tmp_path,
                                                                            monkeypatch):
    records = write_records(tmp_path)
    config = tiny_config(tmp_path, records, max_iteration=4, save_step=2, summary_step=0,
                         skip_step=2)
    folder = config.checkpoint
    real_save = tf.train.CheckpointManager.save

    def save_then_fill_the_disk(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:      # TF has begun writing the shard when the disk fills
            partial = os.path.join(manager.directory, "ckpt-4_temp")
            os.makedirs(partial)
            with open(os.path.join(partial, "part-00000-of-00001.data-00000-of-00001"),
                      "wb") as handle:
                handle.write(b"\0" * 1000)
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{partial}/part-00000-of-00001.data; No space left on device")
        return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_then_fill_the_disk)
    with pytest.raises(InputError) as caught:
        train(config)
    message = str(caught.value)
    assert message.startswith(f"cannot save checkpoint 4 in {folder}: no space left on device "
                              "(a checkpoint needs about 2.9 MB, ")
    assert message.endswith(f"checkpoint {folder}/ckpt-2 is intact")
    assert "\n" not in message
    assert sorted(os.listdir(folder)) == ["checkpoint", "ckpt-2.data-00000-of-00001",
                                          "ckpt-2.index", "run_info.json", "train"]
    kept = checksums(folder)

    # a later run (the disk freed) removes what killed runs left and resumes at step 3
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    os.makedirs(os.path.join(folder, "ckpt-9_temp"))
    stale = temp_path(os.path.join(folder, "run_info.json")).replace(str(os.getpid()),
                                                                     str(dead_pid()))
    open(stale, "w").write("{")
    train(config)
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-4")
    assert not os.path.exists(os.path.join(folder, "ckpt-9_temp")) and not os.path.exists(stale)
    assert json.load(open(os.path.join(folder, "run_info.json")))["start_step"] == 2
    after = checksums(folder)
    assert {k: after[k] for k in ("ckpt-2.data-00000-of-00001", "ckpt-2.index")} == \
        {k: kept[k] for k in ("ckpt-2.data-00000-of-00001", "ckpt-2.index")}
    assert not os.path.exists(os.path.join(folder, LOCK_NAME))


def _mount_tmpfs(folder, size):
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):           # root only; test above injects ENOSPC
        pytest.skip("cannot mount a tmpfs here")
    try:
        records = write_records(tmp_path)
        config = tiny_config(tmp_path, records, max_iteration=4, save_step=2, summary_step=0,
                             checkpoint=str(disk / "ckpt"))
        with pytest.raises(InputError, match=r"cannot save checkpoint 4 in .*disk/ckpt: no "
                           r"space left on device \(a checkpoint needs about 2\.9 MB, "
                           r"[01]\.\d MB free\); checkpoint .*ckpt-2 is intact$"):
            train(config)
        assert sorted(os.listdir(disk / "ckpt")) == [
            "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "run_info.json", "train"]
        reader = tf.train.load_checkpoint(str(disk / "ckpt" / "ckpt-2"))
        assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    finally:
        subprocess.run(["umount", "-l", str(disk)])   # lazy: a summary writer holds a file


# --- 4: the checkpoint is checked against the config before TensorFlow restores ---------

def _eval_config(tmp_path, records, checkpoint, **keys):
    return write_config_file(tmp_path / "eval.config", records, checkpoint,
                             test_data=str(records), **keys)


def test_evaluate_names_each_key_that_differs_from_the_checkpoint(trained, tmp_path, capsys):
    import evaluate

    records, folder = trained
    config = _eval_config(tmp_path, records, folder)
    assert evaluate.main(["-c", str(config), "--override", "num_classes=5"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {config}: checkpoint {folder}/ckpt-2 was trained with other "
                   "settings: num_classes: config 5, checkpoint 2\n")
    # an SSMA-style config without the width keys: the model's keys from run_info.json
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith(("width_multiplier", "backbone_units"))))
    assert evaluate.main(["-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: checkpoint {folder}/ckpt-2 does not fit the "
                          "AdapNet_pp this config builds: backbone_units: config [3, 4, 6, 3], "
                          "checkpoint [1, 1, 1, 1]; width_multiplier: config 1.0, "
                          "checkpoint 0.125\n")
    assert err.count("\n") == 1


def test_without_run_info_the_shapes_say_num_classes(trained, tmp_path, capsys):
    import evaluate

    records, folder = trained
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    os.remove(bare / "run_info.json")
    config = _eval_config(tmp_path, records, bare, num_classes=5)
    assert evaluate.main(["-c", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: {config}: checkpoint {bare}/ckpt-2 does not fit the AdapNet_pp this config "
        "builds: num_classes: config 5, checkpoint 2\n")
    assert evaluate.main(["-c", str(config), "--override", "num_classes=2"]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_another_model_on_a_checkpoint_names_the_model():
    from golden import cases
    from ssma_tf.training.checkpoints import restore_eval_model

    adapnet = cases.config("adapnet_pp").checkpoint
    config = cases.config("segformer").replace(init_checkpoint=None, checkpoint=adapnet)
    with pytest.raises(ConfigError, match=r"^golden/segformer: checkpoint .*adapnet_pp/ckpt-7 "
                       r"does not fit the segformer this config builds: model: config "
                       r"'segformer', checkpoint 'AdapNet_pp'$"):
        restore_eval_model(config)


def test_resume_with_another_num_classes_is_refused_before_building(trained, tmp_path):
    records, folder = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    before = checksums(copy)
    config = tiny_config(tmp_path, records, num_classes=3, max_iteration=4)
    with pytest.raises(ConfigError, match=r"^test: checkpoint .*ckpt-2 was trained with other "
                       r"settings: num_classes: config 3, checkpoint 2$"):
        train(config)
    assert checksums(copy) == before


def test_modalities_are_matched_by_name(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    saved = config_from_dict({"model": "linearfusion", "num_classes": 3,
                              "modalities": ["rgb", "depth"]}).to_dict()
    (folder / "run_info.json").write_text(json.dumps({"config": saved}))
    swapped = config_from_dict({"model": "linearfusion", "num_classes": 3,
                                "modalities": ["depth", "rgb"]}, "swapped.config")
    assert compatibility.aligned(swapped, str(folder / "ckpt-1")).modalities == ["rgb", "depth"]
    other = swapped.replace(modalities=["rgb", "hha"])
    with pytest.raises(ConfigError, match=r"^swapped.config: checkpoint .*ckpt-1 was trained "
                       r"with other settings: modalities: config \['rgb', 'hha'\], checkpoint "
                       r"\['rgb', 'depth'\]$"):
        compatibility.aligned(other, str(folder / "ckpt-1"))


# --- 5: records ------------------------------------------------------------------------

def _damaged(tmp_path, how):
    records = write_records(tmp_path, num=4)
    data = bytearray(open(records, "rb").read())
    if how == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF                     # one flipped byte in a record
    open(records, "wb").write(bytes(data))
    return records


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
def test_browse_names_the_bad_shard_and_offset(tmp_path, capsys, how):
    from ssma_tf.data import browse

    records = _damaged(tmp_path, how)
    assert browse.main(["--records", records, "--out", str(tmp_path / "png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {records}: {how} record at ") and err.count("\n") == 1
    assert "the file is corrupt or truncated" in err


def test_training_and_evaluation_name_the_corrupt_shard(trained, tmp_path, capsys):
    import evaluate

    _, folder = trained
    records = _damaged(tmp_path, "corrupted")
    config = _eval_config(tmp_path, records, folder)
    assert evaluate.main(["-c", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {records}: corrupted record at ")
    run = tiny_config(tmp_path, records, checkpoint=str(tmp_path / "run"), max_iteration=2)
    with pytest.raises(InputError, match=f"^{records}: corrupted record at "):
        train(run)
    assert not os.path.exists(tmp_path / "run")          # nothing left of the failed start


def _record_starts(path):
    """Offset of each record in a TFRecord file (8-byte length, 4-byte CRC, data, CRC);
    TensorFlow's messages name the offset of a bad record's data (12 bytes further)."""
    data, starts = open(path, "rb").read(), [0]
    while True:
        end = starts[-1] + 16 + int.from_bytes(data[starts[-1]:starts[-1] + 8], "little")
        if end >= len(data):
            return starts
        starts.append(end)


def _two_shards(tmp_path, bad_record=2):
    """Records 'train.tfrecords' over shard a (4 records, healthy) and shard b (4 records, a
    byte flipped in record `bad_record`), with per-file counts in the sidecar: (records, b,
    offset of b's bad record)."""
    a = write_records(tmp_path, num=4, name="a")
    b = write_records(tmp_path, num=4, seed=1, name="b")
    offset = _record_starts(b)[bad_record]
    data = bytearray(open(b, "rb").read())
    data[offset + 20] ^= 0xFF                           # in the record's data
    open(b, "wb").write(bytes(data))
    info = schema.DatasetInfo.read(schema.sidecar_path(a))
    info.files, info.num_examples, info.file_examples = ["a.tfrecords", "b.tfrecords"], 8, [4, 4]
    records = str(tmp_path / "train.tfrecords")
    info.write(schema.sidecar_path(records))
    return records, b, offset + 12


def test_skip_corrupt_records_trains_and_evaluates_past_a_corrupt_shard(tmp_path, caplog,
                                                                        capsys):
    import evaluate

    records, bad, offset = _two_shards(tmp_path)
    config = tiny_config(tmp_path, records, max_iteration=2, save_step=2, summary_step=0)
    with pytest.raises(InputError, match=f"^{bad}: corrupted record at {offset}: the file is "
                       "corrupt or truncated"):
        train(config)                                    # the default: stop, name the shard
    assert not os.path.exists(config.checkpoint)
    lost = (f"{bad}: corrupted record at {offset}: read 2 of 4 records, 2 lost "
            "(skip_corrupt_records)")
    total = f"{records}: read 6 of 8 records (skip_corrupt_records)"
    with caplog.at_level(logging.INFO):
        folder = train(config.replace(skip_corrupt_records=True))
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-2")
    assert lost in caplog.messages and total in caplog.messages
    caplog.clear()
    eval_config = _eval_config(tmp_path, records, folder)
    assert evaluate.main(["-c", str(eval_config)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: corrupted record at {offset}")
    with caplog.at_level(logging.INFO):
        assert evaluate.main(["-c", str(eval_config), "--override",
                              "skip_corrupt_records=true"]) == 0
    assert "mIoU" in capsys.readouterr().out
    assert lost in caplog.messages and total in caplog.messages


def test_skip_corrupt_records_counts_and_refuses_records_with_nothing_readable(tmp_path):
    records, bad, _ = _two_shards(tmp_path, bad_record=1)
    assert report_readable(records) == (5, 8)
    truncated = write_records(tmp_path, num=3, name="cut")
    cut = _record_starts(truncated)[2] + 5
    data = open(truncated, "rb").read()
    open(truncated, "wb").write(data[:cut])
    assert report_readable(truncated) == (2, 3)          # old sidecar: its total
    open(bad, "wb").write(b"\x00" * 40)                  # not a record at all
    os.remove(schema.sidecar_path(records))
    with pytest.raises(InputError, match=f"^{bad}: no record can be read, even with "
                       "skip_corrupt_records"):
        report_readable(bad)


def test_a_list_file_given_as_records_is_named(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("a.png b.png c.png\n" * 3)
    config = tiny_config(tmp_path, str(listing))
    with pytest.raises(InputError, match=f"^{listing}: not a TFRecord file .*give the "
                       "converter's --record path, not a list file$"):
        train(config)
    assert not os.path.exists(config.checkpoint)


# --- 6: config values and labels vs num_classes -----------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("learning_rate", -1, "must be above 0, got -1.0"),
    ("save_step", 0, "must be at least 1, got 0"),
    ("skip_step", 0, "must be at least 1, got 0"),
    ("labeled_ratio", 1.5, "must be between 1e-06 and 0.999999, got 1.5"),
    ("batch_size", -2, "must be at least 1, got -2"),
    ("ignore_label", 300, "must be between 0 and 255, got 300"),
])
def test_config_values_out_of_range(key, value, message):
    with pytest.raises(ConfigError, match=f"^run.config: key '{key}' {message}$"):
        config_from_dict({"model": "AdapNet_pp", key: value}, "run.config")


def test_scale_range_and_eval_scales_are_checked():
    with pytest.raises(ConfigError, match="key 'scale_min' \\(3.0\\) must not exceed "
                       "scale_max \\(2.0\\)"):
        config_from_dict({"scale_min": 3.0}, "run.config")
    with pytest.raises(ConfigError, match="key 'eval_scales' must list numbers above 0, got 0"):
        config_from_dict({"eval_scales": [1.0, 0]}, "run.config")


def test_a_crop_larger_than_the_images_pads_and_is_a_warning(tmp_path, caplog):
    records = write_records(tmp_path)                    # 32x64 images
    info = schema.DatasetInfo.read(schema.sidecar_path(records))
    assert check_crop(records, info, (48, 96), 1.0, "run.config") is None   # old sidecar
    info.image_size = {"min": [32, 64], "max": [32, 64]}
    info.write(schema.sidecar_path(records))
    _, info = schema.resolve_records(records)
    assert check_crop(records, info, (32, 64), 1.0, "run.config") is None
    assert check_crop(records, info, (48, 96), 1.5, "run.config") is None   # 48x96 at 1.5
    assert check_crop(records, info, (32, 96), 1.25, "run.config") == (
        f"run.config: key 'width' is 96 but the records {records} hold images of at most "
        "32x64 (HxW), 80 at scale_max 1.25: every training crop is partly padding; a smaller "
        "crop trains faster on the same pixels")
    # legal: the pipeline pads the crop (label ignore_label, inputs 0)
    batch = train_dataset(records, modalities=["rgb", "depth"], batch_size=2, crop=(48, 64),
                          scale_range=(1.0, 1.0), flip=False, photometric=False, seed=0)
    inputs, labels = next(iter(batch))
    assert labels.shape == (2, 48, 64) and inputs["rgb"].shape == (2, 48, 64, 3)
    rows_inside = np.any(labels.numpy() != 255, axis=2).sum(axis=1)
    assert rows_inside.tolist() == [31, 31]              # 32 image rows, the first all 255
    config = tiny_config(tmp_path, records, height=48)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        trainer._start_checks(config, None)
    assert caplog.messages == [f"test: key 'height' is 48 but the records {records} hold "
                               "images of at most 32x64 (HxW), 32 at scale_max 1: every "
                               "training crop is partly padding; a smaller crop trains faster "
                               "on the same pixels"]
    assert not os.path.exists(config.checkpoint)


def test_labels_that_do_not_fit_num_classes(tmp_path):
    records = write_records(tmp_path)
    _, info = schema.resolve_records(records)
    with pytest.raises(InputError, match=f"^run.config: key 'num_classes' is 1 but the records "
                       f"{records} hold 2 classes \\(their sidecar\\)$"):
        check_labels(records, info, 1, 255, "run.config")
    info.num_classes = None
    info.class_histogram = [10, 5, 3] + [0] * 252 + [7]      # ids 0, 1, 2 and 255
    with pytest.raises(InputError, match=r"the records .* have label ids \[2\] >= num_classes "
                       r"2 that are not ignore_label 255 \(3 pixels\)"):
        check_labels(records, info, 2, 255, "run.config")
    check_labels(records, info, 3, 255, "run.config")


def test_training_refuses_records_with_more_classes_and_creates_nothing(tmp_path):
    records = write_records(tmp_path)
    config = tiny_config(tmp_path, records, num_classes=1)
    with pytest.raises(InputError, match="key 'num_classes' is 1 but the records"):
        train(config)
    assert not os.path.exists(config.checkpoint)


# --- 7: wrong-but-plausible images ------------------------------------------------------

def _exif_jpeg(path, image, orientation):
    """A JPEG whose APP1 EXIF segment carries `orientation` (tag 0x0112)."""
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    tiff = (b"II*\x00\x08\x00\x00\x00" + b"\x01\x00"            # header, one IFD entry
            + b"\x12\x01\x03\x00\x01\x00\x00\x00" + bytes([orientation, 0, 0, 0])
            + b"\x00\x00\x00\x00")
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = encoded.tobytes()
    path.write_bytes(data[:2] + app1 + data[2:])
    return str(path)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255                                          # left half white
    rotated = read_image(_exif_jpeg(tmp_path / "r.jpg", image, 6), "x")   # 90 deg clockwise
    assert rotated.shape == (40, 20, 3)
    assert rotated[:20].mean() > 200 and rotated[20:].mean() < 50   # white on top now
    plain = read_image(_exif_jpeg(tmp_path / "p.jpg", image, 1), "x")
    assert plain.shape == (20, 40, 3)


def test_column_checks(tmp_path):
    depth8 = str(tmp_path / "d8.png")
    cv2.imwrite(depth8, np.full((8, 8), 40, np.uint8))
    depth16 = str(tmp_path / "d16.png")
    cv2.imwrite(depth16, np.full((8, 8), 4000, np.uint16))
    photo = str(tmp_path / "photo.jpg")
    cv2.imwrite(photo, np.full((8, 8, 3), 90, np.uint8))
    with pytest.raises(InputError, match=f"^L:3: raw depth {depth8} is an 8-bit image; raw "
                       "depth must be a 16-bit PNG"):
        read_image(depth8, "L:3", "raw")
    with pytest.raises(InputError, match=f"raw depth {photo} is a JPEG"):
        read_image(photo, "L:3", "raw")
    assert read_image(depth8, "L:3", "raw", allow_8bit_depth=True).dtype == np.uint8
    with pytest.raises(InputError, match=f"colour image {depth16} is uint16"):
        read_image(depth16, "L:3", "color")
    with pytest.raises(InputError, match=f"colour image {depth8} has one channel"):
        read_image(depth8, "L:3", "color")
    assert read_image(depth16, "L:3", "raw").dtype == np.uint16


def _list_file(tmp_path, depth_dtype=np.uint16, count=2):
    rgb, depth, label = (str(tmp_path / n) for n in ("rgb.png", "depth.png", "label.png"))
    cv2.imwrite(rgb, np.full((8, 8, 3), 90, np.uint8))
    cv2.imwrite(depth, np.full((8, 8), 40, depth_dtype))
    cv2.imwrite(label, np.ones((8, 8), np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{rgb} {depth} {label}\n" * count)
    return str(listing)


def test_convert_refuses_8bit_depth_and_leaves_nothing(tmp_path):
    listing = _list_file(tmp_path, np.uint8)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"^{listing}:1: raw depth .*depth.png is an 8-bit "
                       "image"):
        convert(listing, str(out / "train.tfrecords"), workers=1)
    assert os.listdir(out) == []
    info = convert(listing, str(out / "train.tfrecords"), workers=1, allow_8bit_depth=True)
    assert info.num_examples == 2


def test_predict_refuses_8bit_depth_and_its_own_input_folder(tmp_path, capsys):
    import predict
    from ssma_tf.data.encodings import modality_spec
    from ssma_tf.data.sample_input import read_sample

    depth8 = str(tmp_path / "d8.png")
    cv2.imwrite(depth8, np.full((8, 8), 40, np.uint8))
    with pytest.raises(InputError, match=f"^S: raw depth {depth8} is an 8-bit image"):
        read_sample({"depth": depth8}, {"depth": modality_spec("depth", "raw")}, "S")
    config = tmp_path / "p.config"
    config.write_text("model: AdapNet_pp\nnum_classes: 2\n")
    assert predict.main(["-c", str(config), "--input", str(tmp_path),
                         "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: --output {tmp_path} is the input folder: predictions could replace input "
        "images; choose another folder or pass --overwrite\n")


# --- 8: no overwrite without asking (converter) -----------------------------------------

def test_converter_output_equal_to_its_list_is_refused(tmp_path):
    listing = _list_file(tmp_path)
    before = checksums(tmp_path)
    with pytest.raises(InputError, match=f"^output {listing} is the list file: it would be "
                       "overwritten; choose another --record or pass --overwrite$"):
        convert(listing, listing, workers=1)
    image = open(listing).read().split()[0]
    with pytest.raises(InputError, match="is an image the list names"):
        convert(listing, image, workers=1)
    assert checksums(tmp_path) == before


def test_converter_removes_temps_of_killed_converters(tmp_path):
    listing = _list_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".train.tfrecords.tmp-{dead_pid()}"
    stale.write_bytes(b"partial")
    mine = out / f".other.tmp-{os.getpid()}"                 # a live process's: kept
    mine.write_bytes(b"in use")
    convert(listing, str(out / "train.tfrecords"), workers=1)
    assert sorted(os.listdir(out)) == [mine.name, "train.info.json", "train.tfrecords"]


# --- 3: the lock ------------------------------------------------------------------------

def test_folder_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": host,
                                                      "started": "2026-01-01T00:00:00"}))
        with pytest.raises(InputError, match=f"^{tmp_path} is in use by another training run "
                           f"\\(pid {sleeper.pid} on {host}, since 2026-01-01T00:00:00\\)"):
            FolderLock(str(tmp_path), "training run").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with FolderLock(str(tmp_path)) as lock:             # the owner is gone: a stale lock
        assert json.load(open(lock.path))["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_remove_stale_temps_keeps_live_processes_files(tmp_path):
    dead = tmp_path / f".a.json.tmp-{dead_pid()}"
    dead.write_text("x")
    (tmp_path / f".b.json.tmp-{os.getpid()}").write_text("x")
    (tmp_path / "c.json").write_text("x")
    assert remove_stale_temps(str(tmp_path)) == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == [f".b.json.tmp-{os.getpid()}", "c.json"]


# --- 10: the CLI ending -----------------------------------------------------------------

def test_cli_ends_in_one_line_and_debug_shows_the_traceback(capsys):
    @guarded
    def broken(argv):
        return {}["missing"]

    @guarded
    def refusing(argv):
        raise InputError("x.config: key 'y' is wrong")

    assert broken(["--flag"]) == 1
    assert capsys.readouterr().err == ("error: unexpected KeyError: 'missing' (run with --debug "
                                       "for the traceback)\n")
    assert refusing([]) == 2
    assert capsys.readouterr().err == "error: x.config: key 'y' is wrong\n"
    with pytest.raises(KeyError):
        broken(["--debug"])
