"""The embedded synthetic RGB-D dataset: files, determinism, classes and the fusion invariants."""

import filecmp
import os

import cv2
import numpy as np
import pytest

from ssma_tf.data import synthetic
from ssma_tf.errors import InputError


def _scenes(count, height=96, width=128):
    return [synthetic.render_scene(np.random.default_rng(i), height, width) for i in range(count)]


def test_render_scene_dtypes_and_ranges():
    for rgb, depth, label in _scenes(10):
        assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
        assert depth.shape == (96, 128) and depth.dtype == np.uint16
        assert label.shape == (96, 128) and label.dtype == np.uint8
        valid = depth[depth > 0]
        assert valid.min() >= 500 and valid.max() <= 8000
        assert 0.005 < (depth == 0).mean() < 0.3          # holes exist but are a minority
        assert set(np.unique(label)) <= set(range(synthetic.NUM_CLASSES)) | {255}


def test_any_image_size():
    rgb, depth, label = synthetic.render_scene(np.random.default_rng(0), 48, 200)
    assert rgb.shape == (48, 200, 3) and depth.shape == label.shape == (48, 200)


def test_every_class_appears_in_almost_every_image():
    present = np.zeros(synthetic.NUM_CLASSES, int)
    for _, _, label in _scenes(30):
        present += np.bincount(label.ravel(), minlength=256)[:synthetic.NUM_CLASSES] > 0
    assert present.min() >= 27, present


def test_boundaries_are_ignore():
    layers = synthetic.render_layers(np.random.default_rng(3), 96, 128)
    _, _, label = synthetic.render_scene(np.random.default_rng(3), 96, 128)
    clean = layers.label
    changes = np.zeros(clean.shape, bool)
    changes[:, 1:] |= clean[:, 1:] != clean[:, :-1]
    changes[1:, :] |= clean[1:, :] != clean[:-1, :]
    assert changes.any()
    assert np.all(label[changes] == 255)
    assert np.array_equal(label[~changes], clean[~changes])


def test_fusion_invariants_exact():
    """Depth-only classes copy the surface colour; the colour-only class keeps the floor depth."""
    for seed in range(10):
        layers = synthetic.render_layers(np.random.default_rng(seed), 96, 128)
        for cls in (synthetic.RELIEF, synthetic.PIT):
            mask = layers.label == cls
            np.testing.assert_array_equal(layers.rgb[mask], layers.surface_rgb[mask])
            assert np.all(np.abs(layers.depth[mask] - layers.surface_depth[mask]) >= 0.1)
        marking = layers.label == synthetic.MARKING
        np.testing.assert_array_equal(layers.depth[marking], layers.surface_depth[marking])
        assert np.abs(layers.rgb[marking] - layers.surface_rgb[marking]).max(axis=-1).mean() > 20


def test_fusion_matters_on_sensor_frames():
    """Mean colour gap: relief ~ its surface, marking far from floor; depth gap the other way."""
    colour_gap = {synthetic.RELIEF: [], synthetic.MARKING: []}
    for seed in range(10):
        rgb, depth, label = synthetic.render_scene(np.random.default_rng(seed), 96, 128)
        layers = synthetic.render_layers(np.random.default_rng(seed), 96, 128)
        for cls in colour_gap:
            mask = label == cls
            diff = rgb[mask].astype(float) - layers.surface_rgb[mask]
            colour_gap[cls].append(np.abs(diff).mean())
        marking = (label == synthetic.MARKING) & (depth > 0)
        depth_err = np.abs(depth[marking] / 1000.0 - layers.surface_depth[marking])
        assert np.median(depth_err) < 0.05
    assert np.mean(colour_gap[synthetic.RELIEF]) < 3.0
    assert np.mean(colour_gap[synthetic.MARKING]) > 30.0


def test_generate_files_lists_and_determinism(tmp_path):
    kwargs = dict(num_train=4, num_val=2, num_unlabeled=3, height=32, width=64, seed=5)
    lists = synthetic.generate(tmp_path / "a", **kwargs)
    synthetic.generate(tmp_path / "b", **kwargs)
    assert set(lists) == {"train", "val", "unlabeled"}
    lines = open(lists["train"]).read().splitlines()
    assert len(lines) == 4
    rgb_rel, depth_rel, label_rel = lines[0].split(" ")
    base = tmp_path / "a"
    rgb = cv2.imread(str(base / rgb_rel), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(base / depth_rel), cv2.IMREAD_UNCHANGED)
    label = cv2.imread(str(base / label_rel), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (32, 64, 3) and depth.dtype == np.uint16 and label.ndim == 2
    expected = synthetic.render_scene(np.random.default_rng([5, 0, 0]), 32, 64)
    np.testing.assert_array_equal(rgb[..., ::-1], expected[0])       # stored BGR on disk
    np.testing.assert_array_equal(depth, expected[1])
    np.testing.assert_array_equal(label, expected[2])
    unlabeled = open(lists["unlabeled"]).read().splitlines()
    assert len(unlabeled) == 3 and all(len(line.split(" ")) == 2 for line in unlabeled)
    assert len(open(lists["val"]).read().splitlines()) == 2
    for split in ("train", "val", "unlabeled"):
        for line in open(lists[split]).read().splitlines():
            for rel in line.split(" "):
                assert filecmp.cmp(base / rel, tmp_path / "b" / rel, shallow=False)


def test_image_independent_of_split_sizes(tmp_path):
    small = synthetic.generate(tmp_path / "s", num_train=2, num_val=1, height=32, width=32)
    large = synthetic.generate(tmp_path / "l", num_train=3, num_val=1, height=32, width=32)
    first = open(small["train"]).readline().split()[0]
    assert first == open(large["train"]).readline().split()[0]
    assert filecmp.cmp(tmp_path / "s" / first, tmp_path / "l" / first, shallow=False)


def test_generate_refuses_foreign_folder_and_bad_sizes(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a synthetic dataset"):
        synthetic.generate(foreign, num_train=1, num_val=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="height/width"):
        synthetic.generate(tmp_path / "x", height=8, width=8)
    synthetic.generate(tmp_path / "again", num_train=1, num_val=1, height=16, width=16)
    synthetic.generate(tmp_path / "again", num_train=2, num_val=1, height=16, width=16)
    assert len(open(tmp_path / "again" / "train.txt").read().splitlines()) == 2


def test_cli(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "d"), "--num-train", "2", "--num-val", "1",
                           "--height", "16", "--width", "24"]) == 0
    assert "train:" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "d" / "val.txt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x").write_text("")
    assert synthetic.main(["--out", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
