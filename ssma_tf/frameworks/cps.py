"""Cross pseudo supervision: two differently initialised networks label each other.

Step (as TorchSemiSeg's CPS, Chen et al. CVPR 2021, and M3L's cps), X = [x_l ; x_u]:
  L = CE(f1(x_l), y) + CE(f2(x_l), y)
      + w(t) * (CE(f1(X), argmax f2(X)) + CE(f2(X), argmax f1(X)));
  w(t) = cps_weight times the mean teacher's sigmoid ramp-up over rampup_steps (0 = off);
  pseudo labels are the argmax of each network's "logits" (the ensemble for LinearFusion),
  pixels below `pseudo_threshold` confidence left out (default 0: none, as the original),
  crop padding (zero in every modality) left out like the truth's; `pseudo_rows:
  unlabeled` restricts the CPS term to the x_u rows (default all, as the original);
  the pseudo CE covers every weighted output, so LinearFusion's streams learn from it too
  (`pseudo_targets: per_output`: each output from the other network's same output).
  Each network has its own optimizer; network 1 is the evaluated model.
With `cutmix` (CPS+CutMix): each network first labels the unmixed x_u without gradient
(`teacher_train_mode` picks the forward mode); the student batch is [x_l ; cutmix(x_u)],
the pseudo labels of the mixed rows are the unmixed labels mixed with the same mask, and
the CPS term covers the mixed rows only.
"""

from typing import ClassVar

import tensorflow as tf

from ssma_tf.frameworks import cutmix
from ssma_tf.frameworks.base import SEMI_KEYS, Framework
from ssma_tf.frameworks.common import (
    SALT_CUTMIX,
    concat_inputs,
    num_rows,
    sigmoid_rampup,
    step_seed,
)
from ssma_tf.registry import Key, register_framework


class CPS(Framework):
    """Two networks, two optimizers, cross pseudo supervision."""

    uses_unlabeled = True
    log_reductions: ClassVar[dict] = {"supervised_loss2": "sum"}   # not named *loss

    def build(self):
        self.model = self.make_model()
        self.model2 = self.make_model()
        self.optimizer = self.make_optimizer(self.model)
        self.optimizer2 = self.make_optimizer(self.model2, name="model2")
        self.build_pseudo_balance(labelers=("model", "model2"))

    def checkpoint_items(self):
        return {"model": self.model, "model2": self.model2,
                **self.optimizer.checkpoint_items("optimizer"),
                **self.optimizer2.checkpoint_items("optimizer2"),
                **self.pseudo_balance_items()}

    @property
    def eval_model(self):
        return self.model

    def networks(self):
        return [(self.model, self.optimizer), (self.model2, self.optimizer2)]

    def _pseudo_labels(self, outputs, inputs, labeler, first_unlabeled):
        """Hard pseudo labels of network `labeler`'s `outputs` (per output with
        `per_output`); rows [first_unlabeled, end) are unlabeled."""
        return self.pseudo_targets(outputs, inputs=inputs, labeler=labeler,
                                   first_unlabeled=first_unlabeled)

    def _mixed_unlabeled(self, inputs_u):
        """(student unlabeled rows, pseudo labels of net 1, of net 2) under CutMix."""
        first = next(iter(inputs_u.values()))
        mask = cutmix.box_masks(step_seed(self.config.seed, self.step, SALT_CUTMIX),
                                num_rows(inputs_u), tf.shape(first)[1], tf.shape(first)[2])
        mode = self.config.teacher_train_mode
        labels1, labels2 = (
            tf.nest.map_structure(lambda t: cutmix.cutmix(t, mask), self._pseudo_labels(
                model(inputs_u, training=mode), inputs_u, labeler, 0))
            for labeler, model in (("model", self.model), ("model2", self.model2)))
        mixed = {name: cutmix.cutmix(value, mask) for name, value in inputs_u.items()}
        return mixed, labels1, labels2

    def train_step(self, labeled, unlabeled=None):
        inputs_l, labels = labeled
        rows_l = num_rows(inputs_l)
        self.count_labels(labels)
        unlabeled_only = self.config.cutmix or self.config.pseudo_rows == "unlabeled"
        inputs_u = unlabeled
        if self.config.cutmix:
            inputs_u, mixed_labels1, mixed_labels2 = self._mixed_unlabeled(unlabeled)
        cps_global = self.global_unlabeled_batch_size
        if not unlabeled_only:
            cps_global += self.global_batch_size
        batch = concat_inputs(inputs_l, inputs_u)
        weight = self.config.cps_weight * sigmoid_rampup(self.ssl_step, self.config.rampup_steps)
        with tf.GradientTape(persistent=True) as tape:
            out1 = self.model(batch, training=True)
            out2 = self.model2(batch, training=True)
            rows_global = self.global_batch_size + self.global_unlabeled_batch_size
            penalty = (self.penalty_loss(self.model, out1, rows_global)
                       + self.penalty_loss(self.model2, out2, rows_global))
            sup1 = self.supervised_loss(labels, {k: v[:rows_l] for k, v in out1.items()})
            sup2 = self.supervised_loss(labels, {k: v[:rows_l] for k, v in out2.items()})
            start = rows_l if unlabeled_only else 0     # first row of the CPS term
            out1 = {k: v[start:] for k, v in out1.items()}
            out2 = {k: v[start:] for k, v in out2.items()}
            if self.config.cutmix:
                labels1, labels2 = mixed_labels1, mixed_labels2
            else:
                rows = {m: v[start:] for m, v in batch.items()}
                first_unlabeled = rows_l - start
                labels1 = self._pseudo_labels(out1, rows, "model", first_unlabeled)
                labels2 = self._pseudo_labels(out2, rows, "model2", first_unlabeled)
            cps = (self.supervised_loss(labels2, out1, global_batch_size=cps_global, ohem=False)
                   + self.supervised_loss(labels1, out2, global_batch_size=cps_global,
                                          ohem=False))
            loss = sup1 + sup2 + weight * cps + penalty
        self.optimizer.apply(tape, loss)
        self.optimizer2.apply(tape, loss)
        del tape
        return {"loss": loss, "supervised_loss": sup1, "supervised_loss2": sup2,
                "cps_loss": cps, "learning_rate": self.optimizer.learning_rate()}


KEYS = {**SEMI_KEYS, "cps_weight": Key("float", 1.5, "cross pseudo supervision weight")}
register_framework("cps", CPS, keys=KEYS)
