"""The Python API: the README's three lines, run folders and SavedModels giving the model's
own numbers, missing modalities, sliding windows, legend and overlay, error messages."""

import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

from eval_models import saved_run
from ssma_tf import Segmenter
from ssma_tf.config import load_config
from ssma_tf.data.normalize import normalize
from ssma_tf.errors import InputError
from ssma_tf.evaluation.inference import Inference, probabilities
from ssma_tf.runs import load_run

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
HEIGHT, WIDTH = 45, 70


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config path, checkpoint folder) of a tiny untrained SSMA run."""
    folder = tmp_path_factory.mktemp("run")
    return saved_run(folder), str(folder / "ckpt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    depth = rng.integers(0, 9000, (HEIGHT, WIDTH), dtype=np.uint16)
    depth[:5] = 0
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "rgb.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(folder / "depth.png"), depth)
    return rgb, depth, str(folder / "rgb.png"), str(folder / "depth.png")


@pytest.fixture(scope="module")
def seg(run):
    return Segmenter.load(run[1])


@pytest.fixture(scope="module")
def loaded(run):
    """(config, the restored Run) for the reference numbers."""
    config = load_config(run[0])
    return config, load_run(config, run[1])


def _model_probabilities(loaded, rgb, depth, inference=Inference()):
    """The restored model's probabilities on the normalised inputs (None: all-zero input)."""
    config, loaded = loaded
    raw = {"rgb": rgb[None]} if depth is None else {"rgb": rgb[None],
                                                    "depth": depth[None, :, :, None]}
    inputs = normalize({n: tf.constant(v) for n, v in raw.items()}, loaded.specs,
                       config.depth_max)
    if depth is None:
        inputs["depth"] = tf.zeros((1, HEIGHT, WIDTH, 1))
    return probabilities(loaded.model, inputs, inference).numpy()[0]


def test_readme_three_lines_run_verbatim(run, images, tmp_path, monkeypatch):
    text = open(README, encoding="utf-8").read()
    block = re.search(r"```python\n(from ssma_tf import Segmenter\n.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) == 3
    os.makedirs(tmp_path / "demo_output" / "runs")
    os.symlink(run[1], tmp_path / "demo_output" / "runs" / "ssma")
    for kind, path in (("rgb", images[2]), ("depth", images[3])):
        os.makedirs(tmp_path / "demo_output" / "data" / "val" / kind)
        os.symlink(path, tmp_path / "demo_output" / "data" / "val" / kind / "000000.png")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    result = scope["result"]
    assert result.labels.shape == (HEIGHT, WIDTH) and result.labels.dtype == np.int32
    assert result.probabilities.shape == (HEIGHT, WIDTH, 2)
    assert result.colored.shape == (HEIGHT, WIDTH, 3)
    assert result.class_names == ["class_0", "class_1"]


def test_run_folder_gives_the_model_numbers_for_files_and_arrays(seg, loaded, images):
    rgb, depth, rgb_path, depth_path = images
    assert seg.modalities == ["rgb", "depth"]
    from_files = seg(rgb=rgb_path, depth=depth_path)
    from_arrays = seg(rgb=rgb, depth=depth)
    expected = _model_probabilities(loaded, rgb, depth)
    np.testing.assert_allclose(from_files.probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(from_arrays.labels, from_files.labels)
    np.testing.assert_array_equal(from_files.labels, expected.argmax(-1))
    np.testing.assert_array_equal(from_files.colored, seg.palette[from_files.labels])
    np.testing.assert_array_equal(from_files.image, rgb)
    # float depth is metres: the same readings as the millimetre image
    metres = seg(rgb=rgb, depth=depth.astype(np.float32) / 1000.0)
    np.testing.assert_allclose(metres.probabilities, expected, atol=1e-6)


def test_a_modality_not_passed_is_missing(seg, loaded, images):
    rgb, depth = images[:2]
    result = seg(rgb=rgb)
    assert result.missing == ("depth",)
    np.testing.assert_allclose(result.probabilities, _model_probabilities(loaded, rgb, None),
                               atol=1e-6)
    depth_only = seg(depth=depth)
    assert depth_only.missing == ("rgb",)
    assert depth_only.image.shape == (HEIGHT, WIDTH, 3)   # the depth shown as grey


def test_slide_mode_and_legend_and_overlay(run, loaded, images):
    rgb, depth = images[:2]
    seg = Segmenter.load(run[1], mode="slide", crop=32, stride=16)
    assert seg.inference == Inference("slide", crop=(32, 32), stride=(16, 16))
    result = seg(rgb=rgb, depth=depth)
    expected = _model_probabilities(loaded, rgb, depth, seg.inference)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    legend = result.legend()
    assert sum(fraction for _, _, fraction in legend) == pytest.approx(1.0)
    for name, colour, _ in legend:
        assert colour == tuple(seg.palette[result.class_names.index(name)])
    overlay = result.overlay
    np.testing.assert_array_equal(
        overlay, np.round(0.5 * result.colored + 0.5 * rgb.astype(np.float32)).astype(np.uint8))


def test_saved_model_folder_matches_the_run(seg, loaded, images, tmp_path):
    from ssma_tf.export.serving import export_saved_model

    rgb, depth, rgb_path, depth_path = images
    config, restored = loaded
    export_saved_model(restored.model, restored.specs, str(tmp_path / "model"),
                       config_dict=config.to_dict())
    exported = Segmenter.load(tmp_path / "model")          # the model folder: version 1
    assert exported.source == str(tmp_path / "model" / "1")
    assert exported.modalities == ["rgb", "depth"]
    result = exported(rgb=rgb_path, depth=depth_path)
    reference = seg(rgb=rgb, depth=depth)
    np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=1e-5)
    np.testing.assert_array_equal(result.labels, reference.labels)
    # raw depth missing: zeros in the raw input are the normalised zeros
    np.testing.assert_allclose(exported(rgb=rgb).probabilities,
                               _model_probabilities(loaded, rgb, None), atol=1e-5)
    with pytest.raises(InputError, match="SavedModel runs its exported graph"):
        Segmenter.load(tmp_path / "model", mode="slide", crop=32)


def test_errors_name_the_problem(seg, run, images, tmp_path):
    rgb, depth = images[:2]
    with pytest.raises(InputError, match="'hha': not an input of this model"):
        seg(rgb=rgb, hha=rgb)
    with pytest.raises(InputError, match="at least one"):
        seg()
    with pytest.raises(InputError, match="differ in size"):
        seg(rgb=rgb, depth=depth[:20])
    with pytest.raises(InputError, match="cannot read image .*nothing.png"):
        seg(rgb=str(tmp_path / "nothing.png"))
    with pytest.raises(InputError, match="neither a SavedModel"):
        Segmenter.load(tmp_path)
    with pytest.raises(InputError, match="--crop"):
        Segmenter.load(run[1], mode="slide")
