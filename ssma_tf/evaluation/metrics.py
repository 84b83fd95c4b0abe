"""Segmentation scores from one confusion matrix accumulated over the whole evaluation set.

The matrix is `keras.metrics.MeanIoU`'s `total_cm` (rows = ground truth, columns = prediction);
pixels whose label is `ignore_label` or `>= num_classes` are never counted.

Two mIoU rules are offered:

- ``"standard"`` (default, as mmseg / Model Garden / M3L): IoU_c = TP / (TP + FP + FN) over the
  matrix; a class absent from both ground truth and prediction has IoU NaN and is left out of
  the mean (nanmean).
- ``"ssma"`` (the original SSMA/AdapNet++ `compute_iou`): predictions were forced to void where
  the ground truth is void, IoU_c = TP / (TP + FP + FN + 1e-10) and the mean ran over every
  class except void (1..N-1), so a class that never occurs counts as 0. Forcing the prediction
  to void at void pixels is the same as not counting those pixels, which the matrix already
  does; the difference from ``"standard"`` is only that absent classes count as 0.
"""

import keras
import numpy as np

MIOU_RULES = ("standard", "ssma")
_SSMA_EPSILON = 1e-10


class ConfusionMatrix:
    """Accumulates a `[num_classes, num_classes]` int64 confusion matrix and derives scores."""

    def __init__(self, num_classes, ignore_label=255, miou_rule="standard"):
        if miou_rule not in MIOU_RULES:
            raise ValueError(f"miou_rule must be one of {MIOU_RULES}, got {miou_rule!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.miou_rule = miou_rule
        self._metric = keras.metrics.MeanIoU(
            self.num_classes, ignore_class=self.ignore_label, sparse_y_pred=True, dtype="int64"
        )

    def update(self, labels, predictions):
        """Adds integer label and prediction maps of the same shape (numpy or tensors)."""
        self._metric.update_state(labels, predictions)

    def reset(self):
        self._metric.reset_state()

    @property
    def matrix(self):
        """The accumulated counts as numpy int64, rows = ground truth, columns = prediction."""
        return np.asarray(self._metric.total_cm.numpy(), dtype=np.int64)

    def _scored_classes(self):
        return [c for c in range(self.num_classes) if c != self.ignore_label]

    def iou(self):
        """Per-class IoU (float64 [num_classes]); NaN for classes never scored (see module doc)."""
        cm = self.matrix.astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(axis=0) + cm.sum(axis=1) - tp
        if self.miou_rule == "ssma":
            iou = tp / (union + _SSMA_EPSILON)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        if 0 <= self.ignore_label < self.num_classes:
            iou[self.ignore_label] = np.nan
        return iou

    def miou(self):
        """Mean IoU under `miou_rule` (a fraction in [0, 1]; NaN if nothing was scored)."""
        values = self.iou()[self._scored_classes()]
        if np.all(np.isnan(values)):
            return float("nan")
        return float(np.nanmean(values))

    def pixel_accuracy(self):
        """Correct pixels / counted pixels."""
        cm = self.matrix
        total = cm.sum()
        return float(np.trace(cm) / total) if total else float("nan")

    def class_accuracy(self):
        """Per-class recall TP / (TP + FN); NaN for classes absent from the ground truth."""
        cm = self.matrix.astype(np.float64)
        rows = cm.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)

    def mean_class_accuracy(self):
        values = self.class_accuracy()[self._scored_classes()]
        if np.all(np.isnan(values)):
            return float("nan")
        return float(np.nanmean(values))

    def to_dict(self, class_names=None):
        """JSON-ready scores: mIoU, accuracies, per-class IoU keyed by class name (NaN -> None)."""
        names = _class_names(class_names, self.num_classes)
        iou = self.iou()
        per_class = {
            names[c]: _json_float(iou[c]) for c in self._scored_classes()
        }
        return {
            "miou": _json_float(self.miou()),
            "miou_rule": self.miou_rule,
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_class_accuracy": _json_float(self.mean_class_accuracy()),
            "per_class_iou": per_class,
            "num_pixels": int(self.matrix.sum()),
            "confusion_matrix": self.matrix.tolist(),
        }


def _class_names(class_names, num_classes):
    if class_names is None:
        return [f"class_{c}" for c in range(num_classes)]
    names = list(class_names)
    if len(names) < num_classes:
        names += [f"class_{c}" for c in range(len(names), num_classes)]
    return names


def _json_float(value):
    return None if value is None or np.isnan(value) else float(value)


def format_table(results, title=None):
    """A text table: one row per class, one column per result dict (from `to_dict`).

    `results` maps a column heading (e.g. "full", "no depth") to a `to_dict` result.
    """
    headings = list(results)
    classes = list(next(iter(results.values()))["per_class_iou"])
    name_width = max([len(c) for c in classes] + [len("pixel accuracy"), 5])
    col_width = max([len(h) for h in headings] + [7])

    def cell(value):
        return f"{'n/a':>{col_width}}" if value is None else f"{100 * value:>{col_width}.2f}"

    lines = [title] if title else []
    lines.append(f"{'class':<{name_width}}  " + "  ".join(f"{h:>{col_width}}" for h in headings))
    lines.append("-" * len(lines[-1]))
    for name in classes:
        row = [cell(results[h]["per_class_iou"][name]) for h in headings]
        lines.append(f"{name:<{name_width}}  " + "  ".join(row))
    lines.append("-" * len(lines[-2]))
    for label, key in (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"),
                       ("class accuracy", "mean_class_accuracy")):
        row = [cell(results[h][key]) for h in headings]
        lines.append(f"{label:<{name_width}}  " + "  ".join(row))
    return "\n".join(lines)
