"""Semi-supervised engine: masking, CutMix, EMA, every SSL framework training a few steps."""

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.frameworks import cutmix, modality_dropout

SEED = tf.constant([3, 4], tf.int64)


def _inputs(batch=8, height=8, width=16):
    rng = np.random.default_rng(0)
    return {
        "rgb": tf.constant(rng.normal(size=(batch, height, width, 3)) + 5.0, tf.float32),
        "depth": tf.constant(rng.uniform(0.1, 1.0, (batch, height, width, 1)), tf.float32),
    }


# --- modality masking --------------------------------------------------------------------

def test_mask_zeroes_exactly_the_chosen_modality_in_range():
    inputs = _inputs()
    choice = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])  # 0: depth, 1: rgb (sorted), 2: none
    out = modality_dropout.mask_modalities(inputs, choice, row_range=(2, 7))
    names = sorted(inputs)
    for row in range(8):
        for index, name in enumerate(names):
            original, masked = inputs[name][row].numpy(), out[name][row].numpy()
            if 2 <= row < 7 and choice[row] == index:
                assert np.all(masked == 0.0) and not np.any(np.signbit(masked))
            else:
                np.testing.assert_array_equal(masked, original)


def test_random_mask_statistics_are_uniform_over_choices():
    inputs = _inputs(batch=3000, height=1, width=1)
    out = modality_dropout.random_modality_mask(inputs, SEED, row_range=(1000, 3000))
    rgb_zero = np.all(out["rgb"].numpy() == 0, axis=(1, 2, 3))
    depth_zero = np.all(out["depth"].numpy() == 0, axis=(1, 2, 3))
    assert not rgb_zero[:1000].any() and not depth_zero[:1000].any()
    assert not (rgb_zero & depth_zero).any()
    for fraction in (rgb_zero[1000:].mean(), depth_zero[1000:].mean()):
        assert abs(fraction - 1 / 3) < 0.05


def test_masking_is_identity_for_a_unimodal_input():
    inputs = {"rgb": _inputs()["rgb"]}
    out = modality_dropout.random_modality_mask(inputs, SEED)
    np.testing.assert_array_equal(out["rgb"].numpy(), inputs["rgb"].numpy())


def test_step_seed_differs_per_step_and_salt_and_is_reproducible():
    a = modality_dropout.step_seed(0, 5, 1).numpy()
    np.testing.assert_array_equal(a, modality_dropout.step_seed(0, 5, 1).numpy())
    assert not np.array_equal(a, modality_dropout.step_seed(0, 6, 1).numpy())
    assert not np.array_equal(a, modality_dropout.step_seed(0, 5, 2).numpy())


# --- CutMix ------------------------------------------------------------------------------

def test_box_masks_are_binary_boxes_of_the_expected_area():
    masks = cutmix.box_masks(SEED, 256, 32, 64).numpy()
    assert masks.shape == (256, 32, 64)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    area = masks.mean(axis=(1, 2))
    # three boxes of U(0.25, 0.5)/3 each: union <= 0.5 (+ rounding), never empty
    assert area.max() <= 0.5 + 0.05 and area.min() > 0.0
    assert 0.15 < area.mean() < 0.4
    other = cutmix.box_masks(tf.constant([3, 5], tf.int64), 256, 32, 64).numpy()
    assert not np.array_equal(masks, other)


def test_single_box_is_a_rectangle():
    mask = cutmix.box_masks(SEED, 16, 32, 64, num_boxes=1).numpy()
    for m in mask:
        rows, cols = np.nonzero(m)
        box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert np.all(box == 1.0) and box.size == m.sum()


def test_cutmix_takes_partner_pixels_where_mask_is_one():
    images = _inputs(batch=4)["rgb"]
    labels = tf.reshape(tf.range(4), [4, 1, 1]) * tf.ones([4, 8, 16], tf.int32)
    mask = cutmix.box_masks(SEED, 4, 8, 16)
    mixed, mixed_labels = cutmix.cutmix(images, mask).numpy(), cutmix.cutmix(labels, mask).numpy()
    m = mask.numpy().astype(bool)
    for row in range(4):
        partner = (row - 1) % 4
        np.testing.assert_array_equal(mixed[row][m[row]], images.numpy()[partner][m[row]])
        np.testing.assert_array_equal(mixed[row][~m[row]], images.numpy()[row][~m[row]])
        np.testing.assert_array_equal(mixed_labels[row], np.where(m[row], partner, row))
