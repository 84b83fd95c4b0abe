"""DMT, one mutual-training round (Feng et al., Pattern Recognition 2022).

Two networks, differently initialised (fresh builds draw different weights; the released
recipe starts one from COCO and one from ImageNet weights), each with its own
optimizer. Network k learns from the labels and from the OTHER network's pseudo labels:
  L_k = CE(f_k(x_l), y) + sum_pixels w * CE(f_k(x_u), y_other)
with y_other / q_other the other labeller's class-balanced pseudo labels and confidences
(dmt_loss.class_thresholds_tf / select_pseudo_labels_tf at `dmt_ratio`, every
`dmt_subsample`-th pixel, rule `dmt_selection`) and w the dynamic mutual weights of f_k's own
softmax (dmt_loss.dynamic_mutual_weights, `dmt_gamma1`, `dmt_gamma2`). Crop padding is never
labelled and is left out of the thresholds.

The labeller (`dmt_labeler`):
- "frozen" (default; the released code, where a round learns from the other model's
  previous-round checkpoint): a copy of each network taken when the semi-supervised phase
  begins (step `sup_only_steps`, after init_checkpoint), fixed for the round, saved in the
  checkpoint (items "labeler1", "labeler2") so a resumed round keeps it;
- "live": the other network as it trains (an online variant, not in DMT).
Differences from the released code that remain: its labels are made offline over the
whole unlabeled set (thresholds over all images, test-time transforms, then the same
augmentation as the image); here they are made per batch on the augmented crop, and the
thresholds are the batch's (per replica). The multi-round driver will supply offline labels.
`dmt_labeler_train_mode` (default false: the code labels in eval mode) picks the labeller's
forward mode.

Normalisation (`dmt_normalize`): "batch" (default, as the code's one loss over the labeled +
pseudo rows of a batch): both terms are divided by the labeled + unlabeled global batch
(each image's mean over its valid pixels; the code divides the batch's sum by its valid
pixels, equal when images have equal valid counts); "separate": the supervised term by
the labeled batch, the mutual term by the unlabeled batch.
Network 1 ("model") is the evaluated model. DMT keeps, per model, the checkpoint with the
best validation mIoU (`<checkpoint>/best/` scores network 1); choosing the better of the
two networks by validation is the multi-round driver's job.
"""

from typing import ClassVar

import tensorflow as tf

from ssma_tf.frameworks.base import SEMI_KEYS, Framework
from ssma_tf.frameworks.common import concat_inputs, ema_update, num_rows
from ssma_tf.frameworks.dmt_loss import (
    SELECTION_RULES,
    class_thresholds_tf,
    dynamic_mutual_weights,
    select_pseudo_labels_tf,
)
from ssma_tf.frameworks.losses import padding_pixels
from ssma_tf.registry import Key, register_framework


class DMT(Framework):
    """Two networks, two optimizers, dynamic mutual loss against the other's labels."""

    uses_unlabeled = True
    log_reductions: ClassVar[dict] = {"supervised_loss2": "sum", "mutual_loss2": "sum",
                                      "pseudo_kept": "mean", "pseudo_kept2": "mean",
                                      "mean_weight": "mean", "mean_weight2": "mean"}

    def build(self):
        self.model = self.make_model()
        self.model2 = self.make_model()
        self.optimizer = self.make_optimizer(self.model)
        self.optimizer2 = self.make_optimizer(self.model2, name="model2")
        self.labeler1 = self.labeler2 = None
        if self.config.dmt_labeler == "frozen":
            self.labeler1 = self.make_model()
            self.labeler2 = self.make_model()
            self.labeler1.set_weights(self.model.get_weights())
            self.labeler2.set_weights(self.model2.get_weights())

    def checkpoint_items(self):
        items = {"model": self.model, "model2": self.model2,
                 **self.optimizer.checkpoint_items("optimizer"),
                 **self.optimizer2.checkpoint_items("optimizer2")}
        if self.labeler1 is not None:
            items.update(labeler1=self.labeler1, labeler2=self.labeler2)
        return items

    @property
    def eval_model(self):
        return self.model

    def networks(self):
        return [(self.model, self.optimizer), (self.model2, self.optimizer2)]

    def _freeze_labelers_at_first_step(self):
        """labeler k <- network k when the semi-supervised phase begins, so init_checkpoint
        and supervised-only steps reach the round's fixed labellers."""
        def copy():
            ema_update(self.labeler1.weights, self.model.weights, 0.0)
            ema_update(self.labeler2.weights, self.model2.weights, 0.0)
            return tf.constant(True)
        tf.cond(tf.equal(self.ssl_step, 0), copy, lambda: tf.constant(False))

    def pseudo_labels(self, labeler, inputs):
        """(class-balanced pseudo labels int32 [B, H, W], confidence [B, H, W]) of
        `labeler` on `inputs`, without gradient; padding pixels get ignore_label."""
        config = self.config
        logits = labeler(inputs, training=config.dmt_labeler_train_mode)["logits"]
        probs = tf.nn.softmax(tf.stop_gradient(tf.cast(logits, tf.float32)))
        labels = tf.argmax(probs, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(probs, axis=-1)
        padding = padding_pixels(inputs)
        thresholds = class_thresholds_tf(tf.where(padding, -1, labels), confidence,
                                         config.num_classes, config.dmt_ratio,
                                         subsample=config.dmt_subsample,
                                         rule=config.dmt_selection)
        labels = select_pseudo_labels_tf(labels, confidence, thresholds, config.ignore_label)
        return tf.where(padding, config.ignore_label, labels), confidence

    def train_step(self, labeled, unlabeled=None):
        config = self.config
        inputs_l, labels = labeled
        rows_l = num_rows(inputs_l)
        if self.labeler1 is not None:
            self._freeze_labelers_at_first_step()
            labeler1, labeler2 = self.labeler1, self.labeler2
        else:
            labeler1, labeler2 = self.model, self.model2
        pseudo1, conf1 = self.pseudo_labels(labeler1, unlabeled)   # network 2 learns these
        pseudo2, conf2 = self.pseudo_labels(labeler2, unlabeled)   # network 1 learns these
        rows_global = self.global_batch_size + self.global_unlabeled_batch_size
        if config.dmt_normalize == "batch":
            sup_global = mutual_global = rows_global
        else:
            sup_global, mutual_global = self.global_batch_size, self.global_unlabeled_batch_size
        batch = concat_inputs(inputs_l, unlabeled)
        logs = {}
        with tf.GradientTape(persistent=True) as tape:
            loss = 0.0
            for suffix, model, pseudo, conf in (("", self.model, pseudo2, conf2),
                                                ("2", self.model2, pseudo1, conf1)):
                outputs = model(batch, training=True)
                loss += self.penalty_loss(model, outputs, rows_global)
                sup = self.supervised_loss(labels, {k: v[:rows_l] for k, v in outputs.items()},
                                           global_batch_size=sup_global)
                rows_u = {k: v[rows_l:] for k, v in outputs.items()}
                weights = dynamic_mutual_weights(
                    tf.nn.softmax(tf.cast(rows_u["logits"], tf.float32)), pseudo, conf,
                    gamma1=config.dmt_gamma1, gamma2=config.dmt_gamma2,
                    ignore_label=config.ignore_label)
                mutual = self.supervised_loss(pseudo, rows_u, global_batch_size=mutual_global,
                                              ohem=False, pixel_weights=weights)
                loss += sup + mutual
                kept = tf.cast(tf.not_equal(pseudo, config.ignore_label), tf.float32)
                logs.update({
                    f"supervised_loss{suffix}": sup, f"mutual_loss{suffix}": mutual,
                    f"pseudo_kept{suffix}": tf.reduce_mean(kept),
                    f"mean_weight{suffix}": tf.reduce_sum(weights * kept) / tf.maximum(
                        tf.reduce_sum(kept), 1.0)})
        self.optimizer.apply(tape, loss)
        self.optimizer2.apply(tape, loss)
        del tape
        return {"loss": loss, **logs, "learning_rate": self.optimizer.learning_rate()}


KEYS = {
    "sup_only_steps": SEMI_KEYS["sup_only_steps"],
    "dmt_gamma1": Key("float", 5.0, "DMT weight exponent where the two networks agree"
                      " (p[y]^gamma1; VOC 5, Cityscapes 3)", bounds=(0, 100)),
    "dmt_gamma2": Key("float", 5.0, "DMT weight exponent where they disagree and the labeller"
                      " is at least as confident (p[y]^gamma2; VOC 5, Cityscapes 3)",
                      bounds=(0, 100)),
    "dmt_ratio": Key("float", 0.2, "DMT: fraction of each predicted class's pixels kept as"
                     " pseudo labels, by confidence (the round's r: 0.2, 0.4, 0.6, 0.8, 1.0)",
                     bounds=(0, 1)),
    "dmt_selection": Key("str", "code", "DMT class threshold: code (the released code: the"
                         " int(n r)+1-th largest, 1e-5 when n r < 1) or paper (exactly the"
                         " top fraction)", SELECTION_RULES),
    "dmt_subsample": Key("int", 16, "DMT thresholds use every this-many-th pixel",
                         bounds=(1, 4096)),
    "dmt_labeler": Key("str", "frozen", "DMT labeller: frozen (each network's weights at the"
                       " round's start, as the code's previous-round checkpoint) or live (the"
                       " other network as it trains)", ("frozen", "live")),
    "dmt_labeler_train_mode": Key("bool", False, "DMT labeller forwards use batch statistics"
                                  " and dropout (false: inference mode, as the code)"),
    "dmt_normalize": Key("str", "batch", "DMT: batch (both terms over the labeled + unlabeled"
                         " batch, as the code's one loss) or separate (each over its own"
                         " batch)", ("batch", "separate")),
}
register_framework("dmt", DMT, keys=KEYS)
