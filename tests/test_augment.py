"""Joint augmentation on in-memory tensors: geometry maths, flip, scale, jitter, views."""

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.data.augment import apply_geometry, augment, sample_geometry, sample_window
from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from ssma_tf.data.schema import ModalitySpec

SPECS = {"rgb": ModalitySpec("rgb", "color", 3, "uint8"),
         "depth": ModalitySpec("depth", "raw", 1, "uint16")}


def example(h=12, w=20):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 6, (h, w, 1)).astype(np.uint8)
    return {"rgb": tf.constant(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)),
            "depth": tf.constant((label.astype(np.uint16) + 1) * 500),
            "label": tf.constant(label)}


def seed(i):
    return tf.constant([i, 0], tf.int64)


@pytest.mark.parametrize("flip", [False, True])
def test_unit_scale_full_crop_is_identity_or_mirror(flip):
    image = tf.reshape(tf.range(12 * 20 * 2, dtype=tf.float32), [12, 20, 2])
    seen = set()
    for i in range(16):
        geometry = sample_geometry(seed(i), tf.constant([12, 20]), (12, 20), (1.0, 1.0), flip)
        out = apply_geometry(image, geometry, (12, 20), "nearest").numpy()
        mirrored = np.array_equal(out, image.numpy()[:, ::-1])
        assert mirrored or np.array_equal(out, image.numpy())
        bilinear = apply_geometry(image, geometry, (12, 20), "bilinear").numpy()
        np.testing.assert_allclose(bilinear, out, atol=1e-3)
        seen.add(mirrored)
    assert seen == ({False, True} if flip else {False})


def test_scale_two_shows_each_source_pixel_twice_without_border_padding():
    image = tf.reshape(tf.range(8 * 8, dtype=tf.float32), [8, 8, 1])
    for i in range(6):
        geometry = sample_geometry(seed(i), tf.constant([8, 8]), (8, 8), (2.0, 2.0), flip=False)
        out = apply_geometry(image, geometry, (8, 8), "nearest", pad_value=-1).numpy()[..., 0]
        assert out.min() >= 0  # edge samples read the edge pixel, they are not padding
        column_steps, row_steps = np.diff(out, axis=1), np.diff(out, axis=0) / 8
        for steps in (column_steps, row_steps.T):  # steps alternate 0 / 1 source pixel
            assert set(np.unique(steps)) == {0.0, 1.0}
            assert np.all(steps[:, 1:] != steps[:, :-1])


def _bilinear_reference(image, rows, cols):
    """Bilinear samples at (rows x cols), edge pixels repeated beyond the image."""
    def taps(coords, n):
        low = np.floor(coords)
        return (np.clip(low, 0, n - 1).astype(int), np.clip(low + 1, 0, n - 1).astype(int),
                (coords - low)[:, None])
    r0, r1, fr = taps(rows, image.shape[0])
    c0, c1, fc = taps(cols, image.shape[1])
    top = image[r0][:, c0] * (1 - fc[None]) + image[r0][:, c1] * fc[None]
    bottom = image[r1][:, c0] * (1 - fc[None]) + image[r1][:, c1] * fc[None]
    return top * (1 - fr[:, :, None]) + bottom * fr[:, :, None]


def test_bilinear_window_matches_reference_at_any_scale_and_mirror():
    image = np.random.default_rng(1).uniform(0, 255, (13, 21, 3)).astype(np.float32)
    for i in range(12):
        geometry = sample_geometry(seed(i), tf.constant([13, 21]), (9, 11), (0.5, 2.5))
        out = sample_window(tf.constant(image.astype(np.uint8)), geometry, (9, 11)).numpy()
        want = _bilinear_reference(image.astype(np.uint8).astype(np.float32),
                                   geometry[0].numpy(), geometry[1].numpy())
        top, bottom, left, right = geometry[2].numpy()  # padding holds arbitrary values
        np.testing.assert_allclose(out[top:bottom, left:right], want[top:bottom, left:right],
                                   atol=2e-3)


def test_crop_larger_than_image_pads_exactly_outside():
    image = tf.ones([6, 10, 1])
    geometry = sample_geometry(seed(1), tf.constant([6, 10]), (16, 16), (1.0, 1.0), flip=True)
    out = apply_geometry(image, geometry, (16, 16), "bilinear", pad_value=-1).numpy()[..., 0]
    assert (out == 1).sum() == 60 and (out == -1).sum() == 256 - 60


def test_upscaled_crop_never_pads():
    ex = example()
    for i in range(8):
        views, label = augment(ex, SPECS, crop=(12, 20), seed=seed(i), scale_range=(1.0, 2.0))
        assert label.numpy().max() <= 5
        assert views[0]["depth"].numpy().min() > 0


def test_depth_matches_label_under_random_geometry():
    ex = example()
    for i in range(8):
        views, label = augment(ex, SPECS, crop=(10, 14), seed=seed(i))
        mm = np.round(views[0]["depth"].numpy()[..., 0] * 1e4).astype(int)
        lab = label.numpy()
        np.testing.assert_array_equal(mm == 0, lab == 255)
        np.testing.assert_array_equal(mm[lab != 255], (lab[lab != 255] + 1) * 500)


def _rgb(views):
    """Normalised colour back to 0..255."""
    return views[0]["rgb"].numpy() * (255 * np.array(IMAGENET_STD)) + 255 * np.array(IMAGENET_MEAN)


def test_photometric_jitter_is_bounded_seeded_and_fused_with_normalisation():
    ex = example()
    ex["rgb"] = tf.constant(np.tile([[[250, 128, 3]]], [12, 20, 1]).astype(np.uint8))
    kwargs = dict(crop=(12, 20), scale_range=(1.0, 1.0), flip=False)
    plain, _ = augment(ex, SPECS, seed=seed(2), photometric=False, **kwargs)
    np.testing.assert_allclose(_rgb(plain), ex["rgb"].numpy(), atol=1e-3)
    jittered = [_rgb(augment(ex, SPECS, seed=seed(i), **kwargs)[0]) for i in range(8)]
    assert all(-1e-3 <= a.min() and a.max() <= 255 + 1e-3 for a in jittered)
    assert max(a.max() for a in jittered) == pytest.approx(255, abs=1e-3)  # clipped, not wrapped
    np.testing.assert_array_equal(jittered[2], _rgb(augment(ex, SPECS, seed=seed(2), **kwargs)[0]))
    assert not np.allclose(jittered[2], jittered[3])
    assert not np.allclose(jittered[2], _rgb(plain), atol=1.0)


def test_two_views_share_geometry_with_independent_jitter():
    views, label = augment(example(), SPECS, crop=(10, 14), seed=seed(5), num_views=2)
    assert len(views) == 2 and list(views[0]) == ["rgb", "depth"]
    np.testing.assert_array_equal(views[0]["depth"], views[1]["depth"])
    assert not np.allclose(views[0]["rgb"], views[1]["rgb"])
    no_jitter, _ = augment(example(), SPECS, crop=(10, 14), seed=seed(5), num_views=2,
                           photometric=False)
    np.testing.assert_array_equal(no_jitter[0]["rgb"], no_jitter[1]["rgb"])


def test_without_label_returns_none():
    ex = example()
    del ex["label"]
    views, label = augment(ex, SPECS, crop=(6, 6), seed=seed(0))
    assert label is None and views[0]["rgb"].shape == (6, 6, 3)
