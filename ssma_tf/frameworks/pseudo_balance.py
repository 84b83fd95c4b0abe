"""Class-balanced pseudo labels (`pseudo_balance: prior`): per-class logit offsets, fitted
online, so that the share of unlabeled pixels a labeler calls class c matches class c's
share of the labeled pixels.

Why: trained from scratch on few labels, a labeler's mean softmax already matches the class
prior, but its argmax does not: it calls the small classes far less often than the labels
do (docs/experiments.md §3.1), so hard pseudo labels teach the student to forget small
classes. Matching the pseudo-label distribution to the labeled one is the idea of
distribution alignment (ReMixMatch) and of DARS; here it is done on the argmax, in logit
space, with one offset vector per labeler output.

Each step, for every labeler output o (a framework may have several labelers: CPS) and
class c:
    prior_c = labeled pixels of class c / labeled pixels, counted over every step so far;
    share_c = unlabeled pixels (not crop padding) with argmax(logits_o + b_o) = c / their number;
    b_o,c  += RATE * (log(prior_c + EPS) - log(share_c + EPS)),
and the targets are made from logits_o + b_o (updated after use). Counts are summed over
replicas, so every replica holds the same offsets; they are saved with the checkpoint.
"""

import tensorflow as tf

from ssma_tf.frameworks.losses import padding_pixels, valid_mask

RATE = 0.05     # offset step per training step (log units per log-ratio of shares)
EPS = 1e-3      # share floor: a class missing from one batch moves its offset by <= ~0.2


def _replica_sum(value):
    """Sum of `value` over the replicas (itself outside tf.distribute)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _state(shape, name):
    return tf.Variable(tf.zeros(shape), trainable=False, name=name,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class PriorBalance(tf.Module):
    """Labeled class counts and the logit offsets of the labeler outputs `keys`."""

    def __init__(self, num_classes, keys, ignore_label):
        super().__init__(name="pseudo_balance")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.label_counts = _state([num_classes], "label_counts")
        self.offsets = {key: _state([num_classes], "offsets_" + key.replace("/", "_"))
                        for key in keys}

    def _class_counts(self, labels, valid):
        """float32 [C]: valid pixels per class over every replica's batch."""
        labels = tf.boolean_mask(labels, valid)
        return _replica_sum(tf.cast(tf.math.bincount(
            labels, minlength=self.num_classes, maxlength=self.num_classes), tf.float32))

    def observe_labels(self, labels):
        """Add the labeled batch's class pixels to the prior's counts."""
        labels = tf.cast(labels, tf.int32)
        valid = valid_mask(labels, self.num_classes, self.ignore_label)
        self.label_counts.assign_add(self._class_counts(labels, valid))

    @property
    def prior(self):
        return self.label_counts / tf.maximum(tf.reduce_sum(self.label_counts), 1.0)

    def adjust(self, key, logits, inputs, first_unlabeled=0):
        """`logits` [B,H,W,C] plus output `key`'s offsets; then the offsets move toward
        matching the argmax share of rows [first_unlabeled, B) (padding left out) to the
        prior."""
        offsets = self.offsets[key]
        adjusted = tf.cast(tf.stop_gradient(logits), tf.float32) + offsets
        rows = adjusted[first_unlabeled:]
        labels = tf.argmax(rows, axis=-1, output_type=tf.int32)
        valid = tf.logical_not(padding_pixels(
            {name: value[first_unlabeled:] for name, value in inputs.items()}))
        counts = self._class_counts(labels, valid)
        share = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
        offsets.assign_add(RATE * (tf.math.log(self.prior + EPS) - tf.math.log(share + EPS)))
        return adjusted
