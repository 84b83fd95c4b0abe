"""The robustness protocol: modality subsets and mIoU^Avg, seeded random missing (never all),
Gaussian noise, means over passes, and evaluate.py's one table + one JSON; predict.py in
sliding windows."""

import json

import numpy as np
import pytest
import tensorflow as tf

from eval_models import depth_threshold_model, sample_batch, saved_run
from ssma_tf.errors import InputError
from ssma_tf.evaluation import robustness
from ssma_tf.evaluation.evaluator import evaluate


@pytest.fixture(scope="module")
def model():
    return depth_threshold_model()


def _ones(batch, height=4, width=5):
    return {"rgb": tf.ones((batch, height, width, 3)), "depth": tf.ones((batch, height, width, 1))}


def test_subsets_largest_first():
    assert robustness.subsets(["rgb", "depth", "hha"]) == [
        ("rgb", "depth", "hha"), ("rgb", "depth"), ("rgb", "hha"), ("depth", "hha"),
        ("rgb",), ("depth",), ("hha",)]
    cases = robustness.protocol_cases(["rgb", "depth"], missing="subsets")
    assert [(c.heading, c.missing, c.group) for c in cases] == [
        ("full", (), "mIoU^Avg"), ("rgb", ("depth",), "mIoU^Avg"),
        ("depth", ("rgb",), "mIoU^Avg")]


def test_random_missing_never_drops_all_and_is_seeded():
    kept = robustness.random_missing(0.5, seed=[0, 0])(_ones(4000))
    rgb = kept["rgb"].numpy()[:, 0, 0, 0]
    depth = kept["depth"].numpy()[:, 0, 0, 0]
    assert set(np.unique(rgb)) == {0.0, 1.0}
    assert np.all(rgb + depth >= 1)                   # never all at once
    # each is dropped when it alone drew "drop" (1/4) or both did and it lost the pick (1/8)
    assert abs((1 - rgb).mean() - 0.375) < 0.03 and abs((1 - depth).mean() - 0.375) < 0.03
    assert np.all(kept["rgb"].numpy() == rgb[:, None, None, None])   # whole sample dropped
    again = robustness.random_missing(0.5, seed=[0, 0])(_ones(4000))["rgb"].numpy()
    other = robustness.random_missing(0.5, seed=[0, 1])(_ones(4000))["rgb"].numpy()
    assert np.array_equal(again, kept["rgb"].numpy()) and not np.array_equal(other, again)
    always = robustness.random_missing(1.0, seed=1)(_ones(200))
    assert np.all(always["rgb"].numpy()[:, 0, 0, 0] + always["depth"].numpy()[:, 0, 0, 0] == 1)
    never = robustness.random_missing(0.0, seed=1)(_ones(10))
    assert np.all(never["rgb"].numpy() == 1) and np.all(never["depth"].numpy() == 1)
    with pytest.raises(InputError, match="--random-missing"):
        robustness.random_missing(1.5, seed=0)


def test_noise_on_the_named_modality_only():
    inputs = {"rgb": tf.zeros((2, 100, 100, 3)), "depth": tf.zeros((2, 100, 100, 1))}
    noisy = robustness.gaussian_noise(robustness.parse_noise("depth=0.2", ["rgb", "depth"]),
                                      seed=0)(inputs)
    assert np.all(noisy["rgb"].numpy() == 0)
    assert abs(noisy["depth"].numpy().std() - 0.2) < 0.01
    assert robustness.parse_noise("rgb=0.1,depth=0", ["rgb", "depth"]) == {"rgb": 0.1,
                                                                          "depth": 0.0}
    for text, message in (("depth", "MODALITY=SIGMA"), ("depth=-1", "MODALITY=SIGMA"),
                          ("thermal=0.1", "'thermal' is not a model input")):
        with pytest.raises(InputError, match=message):
            robustness.parse_noise(text, ["rgb", "depth"])


def test_mean_result_by_hand():
    results = [{"miou": 0.5, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.6,
                "per_class_iou": {"a": 0.4, "b": None}},
               {"miou": 0.3, "pixel_accuracy": 0.7, "mean_class_accuracy": 0.4,
                "per_class_iou": {"a": 0.2, "b": None}}]
    mean = robustness.mean_result(results)
    assert mean["miou"] == pytest.approx(0.4) and mean["pixel_accuracy"] == pytest.approx(0.8)
    assert mean["per_class_iou"] == {"a": pytest.approx(0.3), "b": None}
    assert [m["miou"] for m in mean["members"]] == [0.5, 0.3]


def test_protocol_on_a_model_with_known_answers(model):
    inputs, labels = sample_batch(batch=4, height=32, width=48)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(2)
    cases = robustness.protocol_cases(["rgb", "depth"], missing="subsets", random_rate=0.0,
                                      draws=2, noise=["depth=0"])
    results = {c.heading: evaluate(model, dataset, num_classes=3, missing_modality=c.missing,
                                   perturb=c.perturb) for c in cases}
    report = robustness.report(cases, results)
    assert list(report) == ["full", "rgb", "depth", "noise depth=0", "mIoU^Avg", "random 0"]
    assert report["full"]["miou"] == pytest.approx(1.0)
    no_depth = evaluate(model, dataset, num_classes=3, missing_modality="depth")
    assert report["rgb"]["confusion_matrix"] == no_depth["confusion_matrix"]
    assert report["rgb"]["miou"] < 1.0
    assert report["mIoU^Avg"]["miou"] == pytest.approx(
        np.mean([report[h]["miou"] for h in ("full", "rgb", "depth")]))
    # rate 0 and sigma 0 change nothing
    assert report["random 0"]["miou"] == pytest.approx(1.0) and report["random 0"]["draws"] == 2
    assert report["noise depth=0"]["confusion_matrix"] == report["full"]["confusion_matrix"]
    noisy = robustness.protocol_cases(["rgb", "depth"], noise=["depth=2"])[-1]
    assert evaluate(model, dataset, num_classes=3, perturb=noisy.perturb)["miou"] < 0.9


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    return saved_run(tmp_path_factory.mktemp("run"), num_records=4)


def test_evaluate_cli_one_table_and_one_json(run_config, tmp_path, capsys):
    import evaluate

    output = tmp_path / "metrics.json"
    assert evaluate.main(["--config", run_config, "--missing-modality", "subsets",
                          "--random-missing", "0.5", "--draws", "2", "--noise", "depth=0.5",
                          "--mode", "slide", "--crop", "32", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "mIoU^Avg" in table and "random 0.5" in table and "noise depth=0.5" in table
    report = json.loads(output.read_text())
    assert report["inference"] == {"mode": "slide", "scales": [1.0], "flip": False,
                                   "crop": [32, 32], "stride": [21, 21]}
    results = report["results"]
    assert list(results) == ["full", "rgb", "depth", "noise depth=0.5", "mIoU^Avg",
                             "random 0.5"]
    assert results["mIoU^Avg"]["miou"] == pytest.approx(
        np.mean([results[h]["miou"] for h in ("full", "rgb", "depth")]))
    assert len(results["random 0.5"]["members"]) == 2
    assert results["rgb"]["missing_modality"] == "depth"
    assert evaluate.main(["--config", run_config, "--missing-modality", "some"]) == 2
    assert "'subsets'" in capsys.readouterr().err
    assert evaluate.main(["--config", run_config, "--mode", "slide"]) == 2
    assert "--crop" in capsys.readouterr().err


def test_predict_cli_slide_mode_matches_the_api(run_config, tmp_path):
    import cv2

    import predict
    from ssma_tf import Segmenter

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    depth = rng.integers(0, 9000, (40, 70), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgb)
    cv2.imwrite(str(tmp_path / "a_depth.png"), depth)
    assert predict.main(["--config", run_config, "--input", str(tmp_path / "a.png"),
                         "--depth", str(tmp_path / "a_depth.png"), "--mode", "slide",
                         "--crop", "32", "--stride", "16,24", "--output",
                         str(tmp_path / "out")]) == 0
    written = cv2.imread(str(tmp_path / "out" / "a_labels.png"), cv2.IMREAD_UNCHANGED)
    from ssma_tf.config import load_config
    seg = Segmenter.from_config(load_config(run_config), mode="slide", crop=[32, 32],
                                stride=[16, 24])
    expected = seg(rgb=str(tmp_path / "a.png"), depth=str(tmp_path / "a_depth.png")).labels
    np.testing.assert_array_equal(written, expected)
