"""predict.py: folder, list-file and single-image inputs, missing modality, error messages."""

import os

import cv2
import numpy as np
import pytest

import predict
from eval_models import saved_run

SIZES = {"a": (30, 45), "b": (32, 64)}


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    return saved_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for kind in ("rgb", "depth", "label"):
        os.makedirs(root / kind)
    for stem, (height, width) in SIZES.items():
        cv2.imwrite(str(root / "rgb" / f"{stem}.png"),
                    rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "depth" / f"{stem}.png"),
                    rng.integers(0, 8000, (height, width), dtype=np.uint16))
        cv2.imwrite(str(root / "label" / f"{stem}.png"), np.zeros((height, width), np.uint8))
    (root / "list.txt").write_text("".join(
        f"rgb/{s}.png depth/{s}.png label/{s}.png\n" for s in SIZES))
    return root


def _check_outputs(folder, stems):
    names = sorted(os.listdir(folder))
    assert names == sorted(f"{s}_{k}.png" for s in stems for k in ("color", "labels", "overlay"))
    for stem in stems:
        labels = cv2.imread(str(folder / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == SIZES[stem] and labels.dtype == np.uint8
        assert labels.max() < 2
        colour = cv2.imread(str(folder / f"{stem}_color.png"))
        assert colour.shape == SIZES[stem] + (3,)


def test_folder_of_mixed_sizes(run_config, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict.main(["--config", run_config, "--input", str(images / "rgb"),
                         "--depth", str(images / "depth"), "--output", str(out)]) == 0
    assert "2 predictions" in capsys.readouterr().out
    _check_outputs(out, ["a", "b"])


def test_list_file_with_label_column_and_single_image_without_depth(run_config, images,
                                                                    tmp_path):
    out = tmp_path / "list"
    assert predict.main(["--config", run_config, "--input", str(images / "list.txt"),
                         "--output", str(out)]) == 0
    _check_outputs(out, ["a", "b"])
    single = tmp_path / "single"
    assert predict.main(["--config", run_config, "--input", str(images / "rgb" / "b.png"),
                         "--missing-modality", "depth", "--output", str(single)]) == 0
    _check_outputs(single, ["b"])


def test_errors_name_the_input(run_config, images, tmp_path, capsys):
    empty_depth = tmp_path / "depth"
    os.makedirs(empty_depth)
    args = ["--config", run_config, "--output", str(tmp_path / "x")]
    assert predict.main(args + ["--input", str(images / "rgb"), "--depth", str(empty_depth)]) == 2
    assert "no depth image named a" in capsys.readouterr().err
    assert predict.main(args + ["--input", str(images / "rgb" / "a.png")]) == 2
    assert "'depth' is needed" in capsys.readouterr().err
    assert predict.main(args + ["--input", str(images / "rgb" / "a.png"),
                                "--modality", "hha=x.png"]) == 2
    assert "'hha'" in capsys.readouterr().err
    assert predict.main(args + ["--input", str(tmp_path / "none.png")]) == 2
    assert "none.png" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
