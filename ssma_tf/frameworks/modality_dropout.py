"""Modality masking: per sample, zero one randomly chosen modality (or none).

A missing modality is its all-zero normalised input (docs/architecture.md), so masking is
just zeroing; models with a mask token (LinearFusion) detect the zeros themselves. With N
modalities each masked row draws uniformly from {zero modality 0, ..., zero modality N-1,
keep all}. A unimodal model is never masked: zeroing its only input would leave nothing to
learn from, so masking degenerates to the identity (the framework logs this once).

Randomness is stateless (frameworks/common.py `step_seed`).
"""

import tensorflow as tf
from absl import logging

from ssma_tf.frameworks.common import SALT_MODDROP, step_seed
from ssma_tf.frameworks.supervised import Supervised
from ssma_tf.registry import register_framework


def draw_masked_modality(seed, batch_size, num_modalities):
    """Per-row int32 choice in [0, num_modalities]: index of the modality to zero, or
    `num_modalities` for "keep all"."""
    return tf.random.stateless_uniform(
        [batch_size], seed, minval=0, maxval=num_modalities + 1, dtype=tf.int32
    )


def mask_modalities(inputs, choice, row_range=None):
    """Zero modality `choice[i]` of row i for rows in `row_range` ([start, end), default all).

    `inputs` is the model's input dict; the modality order is sorted(inputs). Rows outside
    the range and rows whose choice is "keep all" are returned untouched. Single-modality
    inputs are returned unchanged.
    """
    names = sorted(inputs)
    if len(names) < 2:
        return dict(inputs)
    rows = tf.range(tf.shape(choice)[0])
    in_range = tf.ones_like(rows, tf.bool)
    if row_range is not None:
        start, end = row_range
        in_range = (rows >= start) & (rows < end)
    masked = {}
    for index, name in enumerate(names):
        drop = in_range & tf.equal(choice, index)
        value = inputs[name]
        masked[name] = tf.where(drop[:, None, None, None], tf.zeros_like(value), value)
    return masked


def random_modality_mask(inputs, seed, row_range=None):
    """Draw a per-row choice and apply it: `mask_modalities(inputs, draw(...), row_range)`."""
    names = sorted(inputs)
    if len(names) < 2:
        return dict(inputs)
    batch = tf.shape(inputs[names[0]])[0]
    return mask_modalities(inputs, draw_masked_modality(seed, batch, len(names)), row_range)



class SupervisedModDrop(Supervised):
    """Supervised training where every labeled row is randomly masked (M3L `nosslmoddrop`).

    A unimodal model is trained unmasked (a warning is logged)."""

    def build(self):
        super().build()
        if len(self.model.inputs) < 2:
            logging.warning("supervised_moddrop: the model has one modality, so masking is off")

    def prepare_inputs(self, inputs):
        return random_modality_mask(inputs, step_seed(self.config.seed, self.step, SALT_MODDROP))


register_framework("supervised_moddrop", SupervisedModDrop)
