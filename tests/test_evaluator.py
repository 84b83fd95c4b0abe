"""evaluate(): whole-set mIoU, padding to any size, multi-scale + flip, missing modality,
overlays."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from eval_models import depth_threshold_model, sample_batch
from ssma_tf.errors import InputError
from ssma_tf.evaluation.evaluator import evaluate, padded_probabilities
from ssma_tf.visualization import blend, colorize, default_palette, display_image

NAMES = ["floor", "wall", "window"]


def _dataset(batches=2, **kwargs):
    parts = [sample_batch(seed=i, **kwargs) for i in range(batches)]
    inputs = {k: np.concatenate([p[0][k] for p in parts]) for k in ("rgb", "depth")}
    labels = np.concatenate([p[1] for p in parts])
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(2)


@pytest.fixture(scope="module")
def model():
    return depth_threshold_model()


def test_padding_makes_any_size_work(model):
    inputs, _ = sample_batch(height=30, width=45)
    with pytest.raises(Exception):
        model(inputs)  # the pooled branch needs sizes divisible by 4
    probs = padded_probabilities(model, {k: tf.constant(v) for k, v in inputs.items()})
    assert probs.shape == (2, 30, 45, 3)
    np.testing.assert_allclose(tf.reduce_sum(probs, -1).numpy(), 1.0, rtol=1e-5)


def test_full_input_scores_perfectly_and_reports_names(model):
    result = evaluate(model, _dataset(), num_classes=3, ignore_label=255, class_names=NAMES)
    assert result["miou"] == pytest.approx(1.0)
    assert result["pixel_accuracy"] == pytest.approx(1.0)
    assert set(result["per_class_iou"]) == set(NAMES)
    assert result["num_images"] == 4
    assert result["num_pixels"] == 4 * 30 * 45


def test_missing_depth_changes_results(model):
    full = evaluate(model, _dataset(), num_classes=3, class_names=NAMES)
    no_depth = evaluate(model, _dataset(), num_classes=3, class_names=NAMES,
                        missing_modality="depth")
    assert no_depth["missing_modality"] == "depth"
    assert no_depth["per_class_iou"]["wall"] == 0.0  # wall is only seen through depth
    assert no_depth["miou"] < full["miou"] - 0.3
    with pytest.raises(InputError, match="thermal"):
        evaluate(model, _dataset(), num_classes=3, missing_modality="thermal")


def test_multiscale_and_flip(model):
    single = evaluate(model, _dataset(), num_classes=3)
    flipped = evaluate(model, _dataset(), num_classes=3, flip=True)
    multi = evaluate(model, _dataset(), num_classes=3, scales=(0.75, 1.0, 1.25), flip=True)
    assert flipped["confusion_matrix"] == single["confusion_matrix"]
    assert multi["scales"] == [0.75, 1.0, 1.25] and multi["flip"]
    assert multi["num_pixels"] == single["num_pixels"]
    assert multi["pixel_accuracy"] > 0.95


def test_ignore_label_pixels_not_counted(model):
    inputs, labels = sample_batch()
    labels[:, :5] = 255
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(2)
    result = evaluate(model, dataset, num_classes=3, ignore_label=255)
    assert result["num_pixels"] == 2 * 25 * 45


def test_overlays_written_for_first_images(model, tmp_path):
    palette = default_palette(3)
    result = evaluate(model, _dataset(), num_classes=3, overlays_dir=str(tmp_path),
                      num_overlays=3, palette=palette)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"{i:05d}_{k}.png" for i in range(3) for k in ("gt", "pred")]
    assert len(result["overlays"]) == 6
    image = cv2.imread(str(tmp_path / "00000_pred.png"))[..., ::-1]
    assert image.shape == (30, 45, 3)
    # the model is perfect here, so the prediction overlay is the GT colours over the RGB image
    inputs, labels = sample_batch(seed=0)
    background = display_image({k: v[0] for k, v in inputs.items()})
    np.testing.assert_array_equal(image, blend(background, colorize(labels[0], palette)))
    assert len({tuple(image[r, c]) for r, c in ((0, 40), (29, 0), (29, 44))}) == 3

def test_colorize_and_blend():
    palette = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    colour = colorize(np.array([[0, 1, 255]]), palette)
    np.testing.assert_array_equal(colour[0], [[255, 0, 0], [0, 255, 0], [0, 0, 0]])
    mixed = blend(np.full((1, 3, 3), 100, np.uint8), colour, alpha=0.5)
    np.testing.assert_array_equal(mixed[0, 0], [178, 50, 50])
    assert len({tuple(c) for c in default_palette(40)}) == 40


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    from eval_models import saved_run

    return saved_run(tmp_path_factory.mktemp("run"), num_records=4)


def test_evaluate_cli_all_modalities(run_config, tmp_path, capsys):
    import json

    import evaluate

    output = tmp_path / "metrics.json"
    code = evaluate.main(["--config", run_config, "--missing-modality", "all", "--output",
                          str(output), "--overlays", str(tmp_path / "ov"), "--num-overlays", "2",
                          "--miou-rule", "ssma", "--batch-size", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "no depth" in printed and "no rgb" in printed and "mIoU" in printed
    report = json.loads(output.read_text())
    assert list(report["results"]) == ["full", "no rgb", "no depth"]
    assert report["results"]["full"]["num_images"] == 4
    assert report["results"]["no depth"]["miou_rule"] == "ssma"
    assert sorted(os.listdir(tmp_path / "ov")) == ["full", "no_depth", "no_rgb"]
    assert len(os.listdir(tmp_path / "ov" / "full")) == 4


def test_evaluate_cli_errors_name_the_problem(run_config, capsys):
    import evaluate

    assert evaluate.main(["--config", run_config, "--missing-modality", "thermal"]) == 2
    assert "thermal" in capsys.readouterr().err
    assert evaluate.main(["--config", run_config, "--scales", "1,x"]) == 2
    assert "--scales" in capsys.readouterr().err
    assert evaluate.main(["--config", run_config, "--override", "test_data=/nope/x.tfrecords"]) == 2
    assert "/nope/x.tfrecords" in capsys.readouterr().err


def test_multiscale_probabilities_average_flips_and_scales(model):
    from ssma_tf.evaluation.evaluator import multiscale_probabilities

    inputs, _ = sample_batch(height=32, width=48)
    inputs = {k: tf.constant(v) for k, v in inputs.items()}
    plain = padded_probabilities(model, inputs)
    mirrored = padded_probabilities(model, {k: v[:, :, ::-1] for k, v in inputs.items()})
    both = multiscale_probabilities(model, inputs, scales=(1.0,), flip=True)
    np.testing.assert_allclose(both.numpy(), 0.5 * (plain + mirrored[:, :, ::-1]).numpy(),
                               atol=1e-6)
    doubled = {"rgb": tf.image.resize(inputs["rgb"], (64, 96)),
               "depth": tf.image.resize(inputs["depth"], (64, 96), method="nearest")}
    expected = tf.image.resize(padded_probabilities(model, doubled), (32, 48))
    multi = multiscale_probabilities(model, inputs, scales=(1.0, 2.0))
    np.testing.assert_allclose(multi.numpy(), 0.5 * (plain + expected).numpy(), atol=1e-5)


def test_eval_output_picks_another_model_output(tmp_path, capsys):
    import json

    import evaluate
    from eval_models import saved_run

    (tmp_path / "run").mkdir()
    run_config = saved_run(tmp_path / "run", num_records=2, model="AdapNet_pp")

    reports = {}
    for key in ("logits", "aux1"):
        output = tmp_path / f"{key}.json"
        assert evaluate.main(["--config", run_config, "--output", str(output),
                              "--override", f"eval_output={key}"]) == 0
        reports[key] = json.loads(output.read_text())["results"]["full"]
    assert reports["logits"]["confusion_matrix"] != reports["aux1"]["confusion_matrix"]
    import export  # the selected output keeps the input dict
    assert export.main(["--config", run_config, "--override", "eval_output=aux1",
                        "--output", str(tmp_path / "exported")]) == 0
    assert list((tmp_path / "exported").glob("*/saved_model.pb"))
    assert evaluate.main(["--config", run_config, "--override", "eval_output=logits_depth"]) == 2
    err = capsys.readouterr().err
    assert "eval_output" in err and "'logits_depth'" in err and "aux1, aux2, logits" in err
