"""Segmentation losses: cross-entropy over valid pixels, optional OHEM and per-pixel weights,
image-level multi-label BCE, multi-output sums.

Output kinds (a model's `output_loss_kinds`, {name: kind}; an output not named there is
"pixel_ce"):
- "pixel_ce": logits [B, H, W, C] against a label map [B, H, W] (`segmentation_loss`);
- "multilabel_bce": logits [B, C] of an image-level head (MLMT's classifier) against a
  multi-hot [B, C]: by default the classes present in the label map (`present_classes`),
  or a given [B, C] target (`image_bce_loss`).
"""

import tensorflow as tf

LOSS_KINDS = ("pixel_ce", "multilabel_bce")


def valid_mask(labels, num_classes, ignore_label):
    """True where a label is trained: not `ignore_label` and inside [0, num_classes)."""
    labels = tf.cast(labels, tf.int32)
    return (labels != ignore_label) & (labels >= 0) & (labels < num_classes)


def _ohem_keep(probs_true, valid, thresh, min_kept):
    """Per image, keep valid pixels whose true-class probability is <= max(thresh, k-th
    smallest)."""
    flat = tf.reshape(tf.where(valid, probs_true, 2.0), [tf.shape(valid)[0], -1])
    pixels = tf.shape(flat)[1]
    kth = tf.gather(tf.sort(flat, axis=1), tf.minimum(min_kept, pixels) - 1, axis=1)
    # Fewer valid pixels than min_kept: kth is the sentinel 2.0 and every valid pixel is kept.
    threshold = tf.stop_gradient(tf.maximum(kth, thresh))
    return valid & (probs_true <= threshold[:, None, None])


def segmentation_loss(labels, logits, *, num_classes, ignore_label=255, global_batch_size,
                      ohem=None, pixel_weights=None):
    """Cross-entropy: per-image mean over valid (or OHEM-kept) pixels, summed / global batch.

    labels: int [B, H, W]; logits: [B, H, W, num_classes] (any float dtype);
    ohem: None or (thresh, min_kept) with min_kept pixels per image (M3L uses 0.7, 0.08*H*W);
    pixel_weights: None or float [B, H, W] multiplying each pixel's loss (DMT's dynamic
    weights). Normalisation: image b contributes sum_kept(w * ce) / max(#kept, 1), i.e. the
    weights scale the terms but the divisor stays the number of kept pixels (not the sum of
    the weights), so weights of 1 give the unweighted loss and weights of 0.5 halve it;
    OHEM's choice of pixels ignores the weights.
    """
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    valid = valid_mask(labels, num_classes, ignore_label)
    safe_labels = tf.where(valid, labels, 0)
    pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    keep = valid
    if ohem:
        thresh, min_kept = ohem
        probs_true = tf.exp(-pixel_loss)
        keep = _ohem_keep(probs_true, valid, float(thresh), int(min_kept))
    keep = tf.cast(keep, tf.float32)
    weighted = pixel_loss * keep
    if pixel_weights is not None:
        weighted *= tf.cast(pixel_weights, tf.float32)
    per_image = tf.reduce_sum(weighted, axis=[1, 2]) / tf.maximum(
        tf.reduce_sum(keep, axis=[1, 2]), 1.0)
    return tf.reduce_sum(per_image) / tf.cast(global_batch_size, tf.float32)


def present_classes(labels, num_classes, ignore_label=255):
    """float32 [B, num_classes] multi-hot: 1 where image b has a valid pixel of class c
    (`ignore_label` and labels outside [0, num_classes) do not count)."""
    labels = tf.cast(labels, tf.int32)
    valid = valid_mask(labels, num_classes, ignore_label)
    hot = tf.one_hot(tf.where(valid, labels, 0), num_classes) * tf.cast(valid, tf.float32)[
        ..., None]
    return tf.reduce_max(hot, axis=[1, 2])


def image_bce_loss(targets, logits, *, global_batch_size):
    """Multi-label BCE of image-level `logits` [B, C] against multi-hot `targets` [B, C]:
    per image the mean over the C classes of BCE(sigmoid(logit), target), summed over the
    images / global batch."""
    logits = tf.cast(logits, tf.float32)
    per_class = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.float32), logits=logits)
    return tf.reduce_sum(tf.reduce_mean(per_class, axis=-1)) / tf.cast(global_batch_size,
                                                                        tf.float32)


def padding_pixels(inputs):
    """bool [B, H, W]: pixels that are zero in every channel of every modality, i.e. the
    padding the augmentation adds around crops of down-scaled images (data/augment.py)."""
    zero = [tf.reduce_all(tf.equal(value, 0), axis=-1) for value in inputs.values()]
    return tf.reduce_all(tf.stack(zero), axis=0)


def class_top_fraction(labels, confidence, num_classes, ratio):
    """bool like `labels`: for every class c, the pixels labeled c whose confidence is within
    the top `ratio` of the batch's c pixels (DMT's class-balanced selection, done per batch;
    a class with fewer than 1/ratio pixels keeps them all, as DMT)."""
    keep = tf.zeros_like(labels, dtype=tf.bool)
    for c in range(num_classes):
        in_class = tf.equal(labels, c)
        count = tf.reduce_sum(tf.cast(in_class, tf.float32))
        kept = tf.cast(tf.floor(count * ratio), tf.int32)
        ranked = tf.sort(tf.reshape(tf.where(in_class, confidence, -1.0), [-1]),
                         direction="DESCENDING")
        cutoff = tf.where(kept >= 1, ranked[tf.maximum(kept - 1, 0)], 0.0)
        keep |= in_class & (confidence >= cutoff)
    return keep


def hard_pseudo_labels(logits, inputs, *, threshold=0.0, class_ratio=0.0, ignore_label=255):
    """argmax of `logits` [B, H, W, C] as int32 [B, H, W], without gradient. Pixels become
    `ignore_label` when they are padding of the `inputs` dict the logits came from, or when
    their top softmax probability is below `threshold` (0: no threshold) unless, with
    `class_ratio` > 0, they are in their class's top `class_ratio` (`class_top_fraction`);
    class_ratio alone (threshold 0) is DMT's class-balanced selection."""
    logits = tf.stop_gradient(tf.cast(logits, tf.float32))
    labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
    confidence = tf.reduce_max(tf.nn.softmax(logits), axis=-1)
    keep = confidence >= threshold                    # threshold 0 keeps every pixel
    if class_ratio > 0:
        balanced = class_top_fraction(labels, confidence, logits.shape[-1], class_ratio)
        keep = (keep | balanced) if threshold > 0 else balanced
    labels = tf.where(keep, labels, ignore_label)
    return tf.where(padding_pixels(inputs), ignore_label, labels)


def penalty_loss(outputs, weights, *, global_batch_size):
    """Weighted per-image penalty outputs ([B], e.g. TokenFusion's "mask_l1"), summed over
    the rows and divided by the global batch; 0.0 when `weights` is empty."""
    total = 0.0
    for name, weight in weights.items():
        total += weight * tf.reduce_sum(tf.cast(outputs[name], tf.float32)) / tf.cast(
            global_batch_size, tf.float32)
    return total


def target_for(targets, name):
    """The target of output `name`: `targets[name]` when targets is a dict of per-output
    targets (pseudo_targets: per_output), else the one target shared by every output."""
    return targets[name] if isinstance(targets, dict) else targets


def image_target(labels, name, num_classes, ignore_label=255):
    """The multi-hot [B, C] target of image-level output `name`: given ([B, C], or a dict
    holding one under `name`), else the classes present in the label map (`target_for`, or
    the dict's "logits" map when it has no `name`)."""
    if isinstance(labels, dict):
        labels = labels[name] if name in labels else labels["logits"]
    if len(labels.shape) == 2:
        return labels
    return present_classes(labels, num_classes, ignore_label)


def supervised_loss(labels, outputs, weights, *, num_classes, ignore_label=255,
                    global_batch_size, ohem=None, kinds=None, pixel_weights=None):
    """Weighted sum over the model outputs named in `weights` of their kind's loss (`kinds`,
    {name: kind}, default "pixel_ce"; see the module docstring). Outputs not in `weights`
    (e.g. `feature_*` tensors) are ignored. `labels` is one label map for all outputs or a
    dict of one per output (`target_for`); `pixel_weights` likewise ([B, H, W] or a dict),
    applied to the pixel outputs; OHEM too applies to pixel outputs only."""
    kinds = kinds or {}
    total = 0.0
    for name, weight in weights.items():
        kind = kinds.get(name, "pixel_ce")
        if kind == "pixel_ce":
            term = segmentation_loss(
                target_for(labels, name), outputs[name], num_classes=num_classes,
                ignore_label=ignore_label, global_batch_size=global_batch_size, ohem=ohem,
                pixel_weights=None if pixel_weights is None else target_for(pixel_weights,
                                                                             name))
        elif kind == "multilabel_bce":
            term = image_bce_loss(image_target(labels, name, num_classes, ignore_label),
                                  outputs[name], global_batch_size=global_batch_size)
        else:
            raise ValueError(f"output {name!r}: unknown loss kind {kind!r}; known: "
                             f"{', '.join(LOSS_KINDS)}")
        total += weight * term
    return total
