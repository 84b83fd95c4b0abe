"""Shared helpers for the model tests: RGB-D inputs, numpy predictions, scripts under jax,
the Segformer head's fused map computed the textbook way."""

import os
import subprocess
import sys

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rgbd_inputs(batch, height=64, width=96, seed=0):
    """{"rgb": normal [B,H,W,3], "depth": uniform [B,H,W,1]} float32 model inputs."""
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.normal(size=(batch, height, width, 3)).astype("float32"),
        "depth": rng.uniform(size=(batch, height, width, 1)).astype("float32"),
    }


def predict_numpy(model, inputs):
    """The model's output dict in inference mode, as numpy arrays."""
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs, training=False).items()}


def textbook_fused_map(head, features):
    """A SegformerHead's map before its dropout and classifier, in inference mode, the plain
    way: Dense per level -> bilinear resize to the c1 grid -> concat [c4..c1] -> 1x1 conv ->
    BN -> ReLU (numpy)."""
    from ssma_tf.models.ops import bilinear_resize

    levels, grid = [], features[0].shape[1:3]
    for i, feature in enumerate(features):
        y = feature @ keras.ops.convert_to_numpy(head.linear_kernels[i])
        y = y + keras.ops.convert_to_numpy(head.linear_biases[i])
        levels.append(keras.ops.convert_to_numpy(bilinear_resize(y, grid)))
    fused = np.concatenate(levels[::-1], axis=-1) @ keras.ops.convert_to_numpy(head.fuse_kernel)
    return keras.ops.convert_to_numpy(keras.ops.relu(head.bn(fused, training=False)))


def run_under_jax(script, *args):
    """Run `python -c script args...` with KERAS_BACKEND=jax (fixed at import, hence a
    subprocess); assert it succeeded and return its stdout."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
