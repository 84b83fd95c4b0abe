"""Tiny labeled RGB-D records and configs for the trainer tests."""

import json

import numpy as np
import tensorflow as tf

from ssma_tf.config import config_from_dict
from ssma_tf.data import schema


def write_records(folder, num=8, height=32, width=64, seed=0, name="train"):
    """Records of `num` samples: rgb (color), depth (raw, mm); label 1 where a bright box is,
    0 elsewhere, 255 on a thin border. Returns the record path."""
    rng = np.random.default_rng(seed)
    path = str(folder / f"{name}.tfrecords")
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(num):
            label = np.zeros((height, width), np.uint8)
            y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
            label[y:y + height // 2, x:x + width // 2] = 1
            rgb = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
            rgb[label == 1] += 150
            depth = np.where(label == 1, 1500, 4000).astype(np.uint16)
            label[0, :] = 255
            writer.write(schema.encode_example({"rgb": rgb, "depth": depth}, label, ["x"]))
    info = schema.DatasetInfo(
        modalities=[schema.ModalitySpec("rgb", "color", 3, "uint8"),
                    schema.ModalitySpec("depth", "raw", 1, "uint16")],
        labeled=True, num_examples=num, files=[f"{name}.tfrecords"], num_classes=2)
    info.write(schema.sidecar_path(path))
    return path


TINY_RUN = {"num_classes": 2, "height": 32, "width": 64, "batch_size": 4,
            "learning_rate": 0.005, "skip_step": 5, "save_step": 5, "summary_step": 5,
            "flip": False, "photometric": False, "scale_min": 1.0, "scale_max": 1.0,
            "shuffle_buffer": 8}
TINY_ADAPNET_MODEL = {"model": "AdapNet_pp", "width_multiplier": 0.125,
                      "backbone_units": [1, 1, 1, 1]}
TINY_ADAPNET = {**TINY_RUN, **TINY_ADAPNET_MODEL}


def tiny_config(tmp_path, records, model_keys=TINY_ADAPNET_MODEL, **changes):
    """A tiny run's config: TINY_RUN, `model_keys` (default a tiny AdapNet++; SSMA over it
    reads the same keys), the records and a checkpoint folder, then `changes`."""
    values = {**TINY_RUN, **model_keys, "train_data": records,
              "checkpoint": str(tmp_path / "ckpt"), "max_iteration": 10, **changes}
    return config_from_dict(values, "test")


def write_config_file(path, records, checkpoint, **keys):
    """A config file for train.py: TINY_ADAPNET's model and size keys, the data and checkpoint
    paths, then `keys`, one `key: value` line each."""
    model_keys = ("model", "num_classes", "width_multiplier", "backbone_units", "height", "width")
    values = {**{k: TINY_ADAPNET[k] for k in model_keys}, "train_data": str(records),
              "checkpoint": str(checkpoint), **keys}
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path
