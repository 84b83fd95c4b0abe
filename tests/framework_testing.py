"""Shared helpers for the framework tests: their sizes and a fixed random RGB-D batch."""

import numpy as np
import tensorflow as tf

NUM_CLASSES, H, W, L, U = 3, 32, 64, 2, 2     # classes, height, width, labeled, unlabeled


def batches(modalities, seed=0):
    """((labeled inputs, labels), unlabeled inputs): L and U rows of normal noise per
    modality (depth 1 channel, the others 3) and uniform random labels."""
    rng = np.random.default_rng(seed)

    def inputs(n):
        return {m: tf.constant(rng.normal(size=(n, H, W, 1 if m == "depth" else 3)), tf.float32)
                for m in modalities}
    labels = tf.constant(rng.integers(0, NUM_CLASSES, (L, H, W)), tf.int32)
    return (inputs(L), labels), inputs(U)
