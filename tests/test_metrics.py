"""ConfusionMatrix: hand-computed IoU, ignore label, absent classes, the SSMA rule, table."""

import math

import numpy as np
import pytest

from ssma_tf.evaluation.metrics import ConfusionMatrix, format_table

# ground truth / prediction, 4 classes, 255 = ignore
GT = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])


def test_matrix_counts_and_ignore_label():
    cm = ConfusionMatrix(4, ignore_label=255)
    cm.update(GT, PRED)
    expected = np.zeros((4, 4), np.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0)]:
        expected[g, p] += 1
    np.testing.assert_array_equal(cm.matrix, expected)


def test_iou_miou_and_accuracies_by_hand():
    cm = ConfusionMatrix(4, ignore_label=255)
    cm.update(GT, PRED)
    iou = cm.iou()
    # class 0: TP1 FP1 FN1 -> 1/3; class 1: TP2 FP1 -> 2/3; class 2: TP1 FN1 -> 1/2
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    # class 3 was predicted only at ignored pixels: absent from both -> NaN, not in the mean
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    assert cm.mean_class_accuracy() == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_accumulates_over_batches_and_labels_beyond_num_classes_are_ignored():
    cm = ConfusionMatrix(4, ignore_label=255)
    cm.update(GT, PRED)
    cm.update(np.array([[3, 7]]), np.array([[3, 3]]))  # 7 >= num_classes -> not counted
    assert cm.matrix.sum() == 7
    assert cm.iou()[3] == pytest.approx(1.0)
    cm.reset()
    assert cm.matrix.sum() == 0
    assert math.isnan(cm.miou())


def test_ssma_rule_void_zero_and_absent_classes_count_as_zero():
    # SSMA-style: class 0 is void (ignore_label=0), classes 1..3 scored, class 3 never occurs
    gt = np.array([[0, 0, 1, 1, 2, 2]])
    pred = np.array([[1, 2, 1, 0, 2, 2]])  # predictions at void pixels must not count as FP
    standard = ConfusionMatrix(4, ignore_label=0)
    ssma = ConfusionMatrix(4, ignore_label=0, miou_rule="ssma")
    for cm in (standard, ssma):
        cm.update(gt, pred)
    assert standard.iou()[1] == pytest.approx(1 / 2)  # TP1, FN1 (predicted void)
    assert standard.iou()[2] == pytest.approx(1.0)  # the void-pixel prediction of 2 is dropped
    assert standard.miou() == pytest.approx(0.75)  # class 3 absent -> skipped
    assert ssma.iou()[3] == 0.0
    assert ssma.miou() == pytest.approx((0.5 + 1.0 + 0.0) / 3, rel=1e-6)
    assert math.isnan(ssma.iou()[0])


def test_unknown_rule_rejected():
    with pytest.raises(ValueError, match="miou_rule"):
        ConfusionMatrix(3, miou_rule="mean")


def test_to_dict_uses_class_names_and_table_lists_them():
    cm = ConfusionMatrix(4, ignore_label=255)
    cm.update(GT, PRED)
    result = cm.to_dict(["road", "car", "sky", "tree"])
    assert result["per_class_iou"]["car"] == pytest.approx(2 / 3)
    assert result["per_class_iou"]["tree"] is None
    assert result["num_pixels"] == 6
    table = format_table({"full": result, "no depth": result})
    assert "road" in table and "no depth" in table and "n/a" in table
    assert "66.67" in table
