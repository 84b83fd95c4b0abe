"""Tiny dict-in / dict-out Keras models for the evaluation, export and predict tests."""

import keras
import numpy as np


def depth_threshold_model(num_classes=3, pool=4):
    """Inputs {"rgb": 3 ch, "depth": 1 ch}; class 1 where depth > 0.25, class 2 where the red
    channel is bright, else 0. A pooled branch makes the model need H, W divisible by `pool`."""
    rgb = keras.Input((None, None, 3), name="rgb")
    depth = keras.Input((None, None, 1), name="depth")
    both = keras.layers.Concatenate()([rgb, depth])
    pixel = keras.layers.Conv2D(num_classes, 1, name="pixel")(both)
    pooled = keras.layers.AveragePooling2D(pool)(both)
    pooled = keras.layers.Conv2D(num_classes, 1, use_bias=False, name="context")(pooled)
    pooled = keras.layers.UpSampling2D(pool)(pooled)
    logits = keras.layers.Add(name="logits")([pixel, pooled])
    model = keras.Model({"rgb": rgb, "depth": depth}, {"logits": logits})
    kernel = np.zeros((1, 1, 4, num_classes), np.float32)
    kernel[0, 0, 3, 1] = 40.0  # depth -> class 1
    kernel[0, 0, 0, 2] = 20.0  # red -> class 2
    bias = np.array([0.0, -10.0, -15.0] + [-50.0] * (num_classes - 3), np.float32)
    model.get_layer("pixel").set_weights([kernel, bias])
    model.get_layer("context").set_weights([np.full((1, 1, 4, num_classes), 0.01, np.float32)])
    return model


def sample_batch(batch=2, height=30, width=45, seed=0):
    """Normalised-looking inputs and the labels the depth_threshold_model predicts."""
    rng = np.random.default_rng(seed)
    depth = np.zeros((batch, height, width, 1), np.float32)
    depth[:, :, : width // 2] = 0.5
    rgb = rng.normal(0.0, 0.1, (batch, height, width, 3)).astype(np.float32)
    rgb[:, : height // 3, :, 0] = 2.0
    labels = np.where(depth[..., 0] > 0.25, 1, 0).astype(np.int32)
    labels[:, : height // 3] = 2
    return {"rgb": rgb, "depth": depth}, labels


def saved_run(folder, num_records=4, model="SSMA"):
    """A real (untrained) tiny run on disk: records, checkpoint with run_info.json and a config
    file, as `train.py` leaves them. SSMA takes rgb + depth, AdapNet_pp rgb only. Returns the
    config path."""
    import tensorflow as tf
    import yaml

    from ssma_tf.config import load_config
    from ssma_tf.frameworks.build import build_framework
    from ssma_tf.training import checkpoints
    from ssma_tf.training.run_info import write_run_info
    from trainer_data import TINY_ADAPNET, write_records

    records = write_records(folder, num=num_records, name="test")
    values = {**TINY_ADAPNET, "model": model, "test_data": records,
              "checkpoint": str(folder / "ckpt"), "max_iteration": 1}
    if model == "SSMA":
        values["stage"] = "finetune"
    path = str(folder / "run.config")
    with open(path, "w") as handle:
        yaml.safe_dump(values, handle)
    config = load_config(path)
    framework = build_framework(config, tf.distribute.get_strategy(), {"rgb": 3, "depth": 1})
    tf.train.Checkpoint(**checkpoints.trackable(framework.checkpoint_items())).save(
        str(folder / "ckpt" / "ckpt"))
    specs = {"rgb": {"name": "rgb", "encoding": "color", "channels": 3, "dtype": "uint8"},
             "depth": {"name": "depth", "encoding": "raw", "channels": 1, "dtype": "uint16",
                       "depth_scale": 0.001}}
    write_run_info(str(folder / "ckpt"), config, specs)
    return path
