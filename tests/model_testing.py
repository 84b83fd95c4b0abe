"""Shared helpers for the model tests: RGB-D inputs, numpy predictions, scripts under jax."""

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


def run_under_jax(script, *args):
    """Run `python -c script args...` with KERAS_BACKEND=jax (fixed at import, hence a
    subprocess); assert it succeeded and return its stdout."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
