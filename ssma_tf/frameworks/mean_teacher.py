"""Mean teacher: an EMA teacher labels every row, the student learns from the labels.

One step (M3L `meanteacher`, TorchSemiSeg MT):
  batch X = [x_l ; x_u]; teacher(X) without gradient gives targets for ALL rows;
  loss = supervised(student(X)[:L], y) + w(t) * consistency(student(X), targets);
  the student's optimizer steps, then teacher <- a_t * teacher + (1 - a_t) * student with
  a_t = min(1 - 1/(t+1), ema_decay), t the steps since the semi-supervised phase began
  (the global step, less `sup_only_steps`; the first update copies).

Choices, all documented in the config keys:
- `consistency: pseudo_ce` (default, M3L): hard pseudo labels argmax(teacher "logits") (the
  ensemble for LinearFusion), cross-entropy on every weighted student output (a pseudo
  label equal to `ignore_label`, e.g. SSMA's void class 0, is not trained, like the truth;
  `pseudo_threshold` > 0 also leaves out pixels the teacher is less sure of, FixMatch-style;
  M3L has no threshold, so the default is 0; crop padding, zero in every modality, gets
  no pseudo label, as it gets no true label);
  `softmax_mse` (TorchSemiSeg MT, use consistency_weight 100): mean squared error between
  the student's and the teacher's softmax.
- `pseudo_targets: per_output` gives each loss-weighted student output the targets of the
  teacher's same output instead of the teacher's "logits": a LinearFusion stream learns
  from the teacher's same stream, not from the ensemble, which a stream blind to a class
  (RGB on depth-only objects) pulls toward its own guess.
- `pseudo_rows: unlabeled` trains the pseudo labels on the unlabeled rows only (U2PL,
  s4GAN); the default `all` also puts them on the labeled rows, as M3L does.
- `rampup_steps`: sigmoid ramp-up exp(-5 (1 - t/T)^2) of the weight; 0 = constant (M3L).
- The EMA covers the trainable variables (the mask token and LinearFusion's ensemble
  weights included). The non-trainable ones, BatchNorm moving statistics above all, are
  copied from the student each step: they already average the student's batch statistics,
  and in train mode the teacher's own forward would move them toward its batches (the
  demo's numbers: docs/experiments.md §3.4).
- `teacher_train_mode` (default true, as M3L and TorchSemiSeg): the teacher forward uses
  batch statistics and dropout; false runs it in inference mode.
- `cutmix`: the unlabeled rows of the student batch are CutMix-ed with their partner rows and
  the targets are mixed with the same mask (frameworks/cutmix.py).
- The teacher is `eval_model`: evaluate/export use the EMA weights.

Subclasses (frameworks/m3l.py) duplicate the labeled rows and mask modalities. A method that
needs more than the consistency term (U2PL's contrastive loss on representation features)
overrides the hooks instead of `train_step`: `teacher_forward(batch)` (the teacher's outputs)
and `extra_losses(student_outputs, teacher_outputs, rows)` (more loss terms, see `Rows`).
"""

from typing import NamedTuple

import tensorflow as tf
from absl import logging

from ssma_tf.frameworks import cutmix, modality_dropout
from ssma_tf.frameworks.base import SEMI_KEYS, Framework
from ssma_tf.frameworks.common import (
    SALT_CUTMIX,
    SALT_STUDENT_MASK,
    SALT_TEACHER_MASK,
    concat_inputs,
    ema_update,
    num_rows,
    sigmoid_rampup,
    step_seed,
)
from ssma_tf.frameworks.losses import target_for
from ssma_tf.registry import Key, register_framework


class Rows(NamedTuple):
    """The student batch's layout, as `extra_losses` sees it. Rows [0, supervised) are the
    labeled copies (true `labels`), rows [supervised, end) the unlabeled ones (CutMix-ed with
    `cutmix`); `targets` are the teacher's targets for every row (mixed like the rows), and
    `global_supervised` / `global_all` the global row counts a loss term is divided by."""
    supervised: object
    labels: object
    targets: object
    global_supervised: int
    global_all: int


def ema_decay(step, max_decay):
    """a_t = min(1 - 1/(t+1), max_decay): 0 at t = 0 (copy), then rising to max_decay."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(1.0 - 1.0 / (step + 1.0), max_decay)


def softmax_mse(targets, outputs, weights, *, global_batch_size):
    """sum_k w_k * mean over pixels and classes of (softmax(out_k) - targets)^2, summed over
    images / global batch; `targets` are probabilities [B, H, W, C], or a dict of them per
    output (losses.target_for)."""
    total = 0.0
    for name, weight in weights.items():
        probs = tf.nn.softmax(tf.cast(outputs[name], tf.float32))
        per_image = tf.reduce_mean(tf.square(probs - target_for(targets, name)),
                                   axis=[1, 2, 3])
        total += weight * tf.reduce_sum(per_image) / tf.cast(global_batch_size, tf.float32)
    return total


def soft_targets(logits):
    """Softmax of `logits` in float32, without gradient (softmax-MSE consistency targets)."""
    return tf.nn.softmax(tf.cast(tf.stop_gradient(logits), tf.float32))


class MeanTeacher(Framework):
    """Student + EMA teacher; see the module docstring for the step."""

    uses_unlabeled = True
    labeled_copies = 1          # 2: student batch [x_l ; x_l ; x_u] (M3L)
    mask_student = False        # zero random modalities on rows [L, end) of the student batch
    mask_teacher = False        # ... and (independent draw) of the teacher batch
    eval_item = "teacher"       # evaluate/export restore the EMA teacher alone

    def build(self):
        self.model = self.make_model()
        self.teacher = self.make_model()
        self.teacher.set_weights(self.model.get_weights())
        self.optimizer = self.make_optimizer(self.model)
        self.build_pseudo_balance()
        if (self.mask_student or self.mask_teacher) and len(self.model.inputs) < 2:
            logging.warning("%s: the model has one modality, so modality masking is off",
                            type(self).__name__)

    def checkpoint_items(self):
        return {"model": self.model, "teacher": self.teacher,
                **self.optimizer.checkpoint_items(), **self.pseudo_balance_items()}

    @property
    def eval_model(self):
        return self.teacher

    def networks(self):
        return [(self.model, self.optimizer)]

    def _seed(self, salt):
        return step_seed(self.config.seed, self.step, salt)

    # --- hooks for subclasses ---

    def teacher_forward(self, batch):
        """The teacher's outputs on `batch` (already masked for it), without gradient: the
        forward pseudo targets are made from (`teacher_train_mode` picks its mode)."""
        return self.teacher(batch, training=self.config.teacher_train_mode)

    def extra_losses(self, student_outputs, teacher_outputs, rows):
        """{name: loss} added (as they are) to the step's loss and logged; none here.

        `student_outputs` are the student's outputs on the whole student batch (under the
        tape), `teacher_outputs` the teacher's (`teacher_forward`) on the teacher batch, the
        unmixed rows before CutMix, `rows` a `Rows`. Each term is already weighted and
        divided by its global row count; name it `*loss` (summed over replicas) or declare
        its reduction in `log_reductions`."""
        return {}

    # --- the step ---

    def _teacher_pass(self, batch, labeled_rows, first_unlabeled):
        """(teacher outputs, targets) for every row of `batch` (see `_teacher_targets`)."""
        teacher_batch = batch
        if self.mask_teacher:
            teacher_batch = modality_dropout.random_modality_mask(
                batch, self._seed(SALT_TEACHER_MASK), (labeled_rows, num_rows(batch)))
        outputs = self.teacher_forward(teacher_batch)
        soft = self.config.consistency == "softmax_mse"    # else hard pseudo labels
        return outputs, self.pseudo_targets(outputs, inputs=batch,
                                            first_unlabeled=first_unlabeled,
                                            make_target=soft_targets if soft else None)

    def _teacher_targets(self, batch, labeled_rows, first_unlabeled):
        """Pseudo labels (int32 [B,H,W], none on crop padding) or probabilities
        ([B,H,W,C]) for every row; a dict of them per output with `pseudo_targets:
        per_output`. Rows [labeled_rows, end) may be masked for the teacher; rows
        [first_unlabeled, end) are the unlabeled ones."""
        return self._teacher_pass(batch, labeled_rows, first_unlabeled)[1]

    def consistency_loss(self, targets, outputs, global_batch_size):
        """Pseudo-label CE (no OHEM) or softmax MSE over the model's weighted outputs."""
        if self.config.consistency == "softmax_mse":
            return softmax_mse(targets, outputs, self.pixel_loss_weights,
                               global_batch_size=global_batch_size)
        return self.supervised_loss(targets, outputs, global_batch_size=global_batch_size,
                                    ohem=False)

    def _copy_student_at_first_step(self):
        """teacher <- student when the semi-supervised phase begins (step 0, or
        sup_only_steps), so weights the student got since `build` (init_checkpoint, the
        supervised-only steps) reach the teacher before it labels anything."""
        def copy():
            ema_update(self.teacher.weights, self.model.weights, 0.0)
            return tf.constant(True)
        tf.cond(tf.equal(self.ssl_step, 0), copy, lambda: tf.constant(False))

    def _prepare(self, inputs_l, labels, inputs_u):
        """`prepare_batches` plus the teacher's outputs."""
        self._copy_student_at_first_step()
        copies = self.labeled_copies
        batch = concat_inputs(*([inputs_l] * copies), inputs_u)
        sup_rows = copies * num_rows(inputs_l)
        self.count_labels(labels)
        teacher_outputs, targets = self._teacher_pass(batch, num_rows(inputs_l), sup_rows)
        student_batch = batch
        if self.config.cutmix:
            first = next(iter(inputs_u.values()))
            mask = cutmix.box_masks(self._seed(SALT_CUTMIX), num_rows(inputs_u),
                                    tf.shape(first)[1], tf.shape(first)[2])
            mixed_u = {name: cutmix.cutmix(value, mask) for name, value in inputs_u.items()}
            student_batch = concat_inputs(*([inputs_l] * copies), mixed_u)
            targets = tf.nest.map_structure(
                lambda t: tf.concat([t[:sup_rows], cutmix.cutmix(t[sup_rows:], mask)], 0),
                targets)
        if self.mask_student:
            student_batch = modality_dropout.random_modality_mask(
                student_batch, self._seed(SALT_STUDENT_MASK),
                (num_rows(inputs_l), num_rows(student_batch)))
        return student_batch, tf.concat([labels] * copies, axis=0), targets, teacher_outputs

    def prepare_batches(self, inputs_l, labels, inputs_u):
        """(student batch, supervised labels for its first rows, targets for all rows)."""
        return self._prepare(inputs_l, labels, inputs_u)[:3]

    def train_step(self, labeled, unlabeled=None):
        inputs_l, labels = labeled
        student_batch, sup_labels, targets, teacher_outputs = self._prepare(
            inputs_l, labels, unlabeled)
        sup_rows = num_rows(sup_labels)
        sup_global = self.labeled_copies * self.global_batch_size
        all_global = sup_global + self.global_unlabeled_batch_size
        rows = Rows(sup_rows, sup_labels, targets, sup_global, all_global)
        weight = self.config.consistency_weight * sigmoid_rampup(
            self.ssl_step, self.config.rampup_steps)
        with tf.GradientTape() as tape:
            outputs = self.model(student_batch, training=True)
            supervised = self.supervised_loss(
                sup_labels, {k: v[:sup_rows] for k, v in outputs.items()},
                global_batch_size=sup_global)
            if self.config.pseudo_rows == "unlabeled":
                consistency = self.consistency_loss(
                    tf.nest.map_structure(lambda t: t[sup_rows:], targets),
                    {k: v[sup_rows:] for k, v in outputs.items()},
                    self.global_unlabeled_batch_size)
            else:
                consistency = self.consistency_loss(targets, outputs, all_global)
            loss = supervised + weight * consistency
            extra = self.extra_losses(outputs, teacher_outputs, rows)
            for value in extra.values():
                loss += value
            loss += self.penalty_loss(self.model, outputs, all_global)
        self.optimizer.apply(tape, loss)
        ema_update(self.teacher.trainable_weights, self.model.trainable_weights,
                   ema_decay(self.ssl_step, self.config.ema_decay))
        ema_update(self.teacher.non_trainable_weights, self.model.non_trainable_weights, 0.0)
        return {"loss": loss, "supervised_loss": supervised, "consistency_loss": consistency,
                "consistency_weight": weight, **extra,
                "learning_rate": self.optimizer.learning_rate()}


KEYS = {
    **SEMI_KEYS,
    "ema_decay": Key("float", 0.99, "teacher EMA decay", bounds=(0, 1)),
    "consistency_weight": Key("float", 1.0, "weight of the pseudo-label / consistency loss"),
    "consistency": Key("str", "pseudo_ce", "hard pseudo-label CE (M3L) or softmax MSE"
                       " (TorchSemiSeg MT, weight 100)", ("pseudo_ce", "softmax_mse")),
}
register_framework("mean_teacher", MeanTeacher, keys=KEYS)
