"""DMT (Feng et al., Pattern Recognition 2022): dynamic mutual loss weights and
the labelling step's class-balanced pseudo-label selection.

Dynamic weights (`dynamic_mutual_weights`, the released DynamicMutualLoss):
per pixel, with p the current model's softmax (no gradient), d = argmax p, m = max p, and
the other model's pseudo label y and confidence q:
  agree (d == y):              w = p[y] ** gamma1
  disagree and m > q:          w = 0            (the current model is more confident)
  disagree and m <= q:         w = p[y] ** gamma2
(a tie m == q falls in the last case). The weights enter `losses.segmentation_loss` through
its `pixel_weights`; ignored pseudo pixels have CE 0 whatever their weight.

Selection (`class_thresholds`, `select_pseudo_labels`): the labeller's argmax
y and max probability q over the whole unlabeled set; every 16th pixel is kept for the
statistics; per predicted class c with n_c sampled pixels sorted ascending, the threshold
  rule "code" (default, the released code): k_c = sorted[-int(n_c * r) - 1], i.e. the
      int(n_c r)+1-th largest; k_c = 1e-5 when n_c * r < 1 (empty class included); the
      minimum when r >= 1;
  rule "paper" ("the top r of each class"): k_c = the int(n_c * r)-th largest (exactly the
      top fraction, ties at k_c kept); every pixel when n_c * r < 1 or r >= 1;
and pixels with q < k_c[y] become `ignore_label`.
"""

import numpy as np
import tensorflow as tf

SELECTION_RULES = ("code", "paper")
EMPTY_THRESHOLD = 1e-5          # the code's k_c when n_c * r < 1


def dynamic_mutual_weights(probs, pseudo_labels, pseudo_confidence, *, gamma1, gamma2,
                           ignore_label=255):
    """float32 [B, H, W] DMT weights (module docstring). probs: the current model's
    softmax [B, H, W, C]; pseudo_labels int [B, H, W] (ignore_label or >= C: not trained,
    weight computed as for class 0); pseudo_confidence float [B, H, W]. No gradient."""
    probs = tf.stop_gradient(tf.cast(probs, tf.float32))
    num_classes = probs.shape[-1]
    labels = tf.cast(pseudo_labels, tf.int32)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    safe = tf.where(valid, labels, 0)
    decision = tf.argmax(probs, axis=-1, output_type=tf.int32)
    confidence = tf.reduce_max(probs, axis=-1)
    p_label = tf.gather(probs, safe, axis=-1, batch_dims=3)
    agree = tf.equal(decision, labels)
    current_wins = confidence > tf.cast(pseudo_confidence, tf.float32)
    return tf.where(agree, tf.pow(p_label, gamma1),
                    tf.where(current_wins, 0.0, tf.pow(p_label, gamma2)))


def _threshold(sorted_conf, ratio, rule):
    """k_c of one class from its sampled confidences sorted ascending (module docstring)."""
    count = len(sorted_conf)
    if ratio >= 1:
        return float(sorted_conf[0]) if count else EMPTY_THRESHOLD
    top = int(count * ratio)
    if top < 1:
        return EMPTY_THRESHOLD if rule == "code" else 0.0
    return float(sorted_conf[-top - 1] if rule == "code" else sorted_conf[-top])


def class_thresholds(labels, confidence, num_classes, ratio, *, subsample=16, rule="code"):
    """np.float32 [num_classes] thresholds k_c from the labeller's argmax `labels` and max
    probability `confidence` (arrays of one shape, e.g. every unlabeled image's pixels
    stacked or concatenated; flattened, then every `subsample`-th pixel used)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule {rule!r}: one of {', '.join(SELECTION_RULES)}")
    labels = np.asarray(labels).reshape(-1)[::subsample]
    confidence = np.asarray(confidence, np.float64).reshape(-1)[::subsample]
    return np.array([_threshold(np.sort(confidence[labels == c]), ratio, rule)
                     for c in range(num_classes)], np.float32)


def select_pseudo_labels(labels, confidence, thresholds, ignore_label=255):
    """`labels` with pixels whose confidence is below their class's threshold set to
    `ignore_label` (numpy in, numpy out; labels outside the thresholds stay as they are)."""
    labels = np.asarray(labels)
    confidence = np.asarray(confidence)
    thresholds = np.asarray(thresholds, np.float32)
    inside = (labels >= 0) & (labels < len(thresholds))
    limit = thresholds[np.where(inside, labels, 0)]
    return np.where(inside & (confidence < limit), ignore_label, labels).astype(labels.dtype)


def class_thresholds_tf(labels, confidence, num_classes, ratio, *, subsample=16, rule="code"):
    """`class_thresholds` in TF ops (graph-safe; a batch's pixels, e.g. an online labeller)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule {rule!r}: one of {', '.join(SELECTION_RULES)}")
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])[::subsample]
    confidence = tf.reshape(tf.cast(confidence, tf.float32), [-1])[::subsample]
    out = []
    for c in range(num_classes):
        values = tf.sort(tf.boolean_mask(confidence, tf.equal(labels, c)))
        count = tf.size(values)
        if ratio >= 1:
            out.append(tf.cond(count > 0, lambda v=values: v[0],
                               lambda: tf.constant(EMPTY_THRESHOLD)))
            continue
        top = tf.cast(tf.floor(tf.cast(count, tf.float32) * ratio), tf.int32)
        index = count - top - 1 if rule == "code" else count - top
        small = EMPTY_THRESHOLD if rule == "code" else 0.0
        out.append(tf.cond(top >= 1, lambda v=values, i=index: v[tf.maximum(i, 0)],
                           lambda s=small: tf.constant(s)))
    return tf.stack(out)


def select_pseudo_labels_tf(labels, confidence, thresholds, ignore_label=255):
    """`select_pseudo_labels` in TF ops."""
    labels = tf.cast(labels, tf.int32)
    num_classes = thresholds.shape[0]
    inside = (labels >= 0) & (labels < num_classes)
    limit = tf.gather(thresholds, tf.where(inside, labels, 0))
    return tf.where(inside & (tf.cast(confidence, tf.float32) < limit), ignore_label, labels)
