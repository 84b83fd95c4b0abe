"""DMT, Dynamic Mutual Training (Feng et al., Pattern Recognition 2022): stage 0 and every
mutual round in one run.

Two networks, differently initialised (fresh builds draw different weights; the released
recipe starts one from COCO and one from ImageNet weights).

Schedule (all from the global step, so a run killed inside any round resumes exactly):
- stage 0: the first `sup_only_steps` steps train both networks on labels alone (the
  trainer's supervised-only phase), each on its stage-0 optimizer ("optimizer",
  "optimizer2": the config's optimizer and learning_rate, poly over sup_only_steps);
- then rounds k = 0 .. R-1 of `dmt_round_steps` steps each (0: the semi-supervised steps
  split evenly; the last round also runs any remainder, its learning rate held at the end),
  round k using ratio `dmt_ratios[k]` (default 0.2, 0.4, 0.6, 0.8, 1.0). At each round's
  first step, in the graph: each labeller is frozen from its network's weights at the end
  of the previous round (labeller k labels for the other network) and each network's round
  optimizer ("round_optimizer", "round_optimizer2": `dmt_learning_rate`, poly over
  dmt_round_steps) restarts: its step count and slots are zeroed, as the code's fresh
  optimizer and poly schedule per round. Labellers, optimizers and the step are saved.

Network k learns from the labels and from the OTHER network's pseudo labels:
  L_k = CE(f_k(x_l), y) + sum_pixels w * CE(f_k(x_u), y_other)
with y_other / q_other the other labeller's class-balanced pseudo labels and confidences
(dmt_loss.class_thresholds_tf / select_pseudo_labels_tf at the round's ratio, every
`dmt_subsample`-th pixel, rule `dmt_selection`) and w the dynamic mutual weights of f_k's own
softmax (dmt_loss.dynamic_mutual_weights, `dmt_gamma1`, `dmt_gamma2`). Crop padding is never
labelled and is left out of the thresholds.

The labeller (`dmt_labeler`): "frozen" (default, the code: the other model's previous-round
weights) or "live" (the other network as it trains; an online variant, not in DMT).
`dmt_labeler_train_mode` (default false: the code labels in eval mode) picks its mode.

Where this differs from the released code:
- its labels are made offline over the whole unlabeled set (thresholds over all images,
  test-time transforms, then the same augmentation as the image); here they are made per
  batch on the augmented crop, and the thresholds are the batch's (per replica);
- a round starts from each network's weights at the end of the previous round (stage 0
  included); the code loads the checkpoint it saved, for stage 0 the best by validation;
- validation (the trainer's `eval_step`) scores one network, `dmt_eval_network` (1 default),
  and keeps its best checkpoint; the code keeps each network's best and reports the better
  one: train twice with 1 and 2, or evaluate the other with
  `--override dmt_eval_network=2` (both networks are in every checkpoint).

Normalisation (`dmt_normalize`): "batch" (default, as the code's one loss over the labeled +
pseudo rows of a batch): both terms are divided by the labeled + unlabeled global batch
(each image's mean over its valid pixels; the code divides the batch's sum by its valid
pixels, equal when images have equal valid counts); "separate": the supervised term by
the labeled batch, the mutual term by the unlabeled batch.

Modalities: both networks and the labellers see every modality; photometric augmentation
touches colour modalities only, geometric augmentation all jointly (the input pipeline). DMT
masks no modality itself; a model with its own modality dropout (a model key) trains as usual.
"""

from typing import ClassVar

import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.frameworks.base import SEMI_KEYS, Framework
from ssma_tf.frameworks.common import concat_inputs, ema_update, num_rows
from ssma_tf.frameworks.dmt_loss import (
    SELECTION_RULES,
    class_thresholds_tf,
    dynamic_mutual_weights,
    select_pseudo_labels_tf,
)
from ssma_tf.frameworks.losses import padding_pixels
from ssma_tf.optim import GroupOptimizer
from ssma_tf.registry import Key, register_framework


def round_length(config):
    """Steps per round: `dmt_round_steps`, or the semi-supervised steps split evenly over
    the rounds; ConfigError when a round would have no step."""
    ratios = config.dmt_ratios
    if not ratios or not all(isinstance(r, (int, float)) and 0 < r <= 1 for r in ratios):
        raise ConfigError(f"{config.source}: key 'dmt_ratios': a list of ratios in (0, 1], "
                          f"got {ratios!r}")
    rounds = len(ratios)
    steps = config.dmt_round_steps or (config.max_iteration - config.sup_only_steps) // rounds
    if steps < 1:
        raise ConfigError(f"{config.source}: keys 'dmt_round_steps' / 'max_iteration': "
                          f"{rounds} DMT rounds need at least {rounds} steps after "
                          f"sup_only_steps {config.sup_only_steps}")
    return steps


def round_index(ssl_step, round_steps, num_rounds):
    """int32 round of semi-supervised step `ssl_step` (0-based; the last round runs on)."""
    index = tf.cast(tf.maximum(ssl_step, 0) // round_steps, tf.int32)
    return tf.minimum(index, num_rounds - 1)


def round_starts(ssl_step, round_steps, num_rounds):
    """bool: `ssl_step` is the first step of a round."""
    ssl_step = tf.cast(ssl_step, tf.int64)
    return ((ssl_step >= 0) & tf.equal(ssl_step % round_steps, 0)
            & (ssl_step // round_steps < num_rounds))


def restart_optimizer(optimizer, restart):
    """Where bool `restart` holds, zero the step count and slots of every group of a
    GroupOptimizer (a fresh optimizer; loss scales and learning-rate variables are kept).
    Assigned every step (times 0 or 1): the step count syncs replicas, which a conditional
    branch under a distribution strategy may not do."""
    for keras_optimizer in optimizer.optimizers.values():
        inner = getattr(keras_optimizer, "inner_optimizer", keras_optimizer)
        for variable in inner.variables:
            if variable.name != "learning_rate":
                variable.assign(variable * tf.cast(tf.logical_not(restart), variable.dtype))


class DMT(Framework):
    """Two networks, each with a stage-0 and a round optimizer, dynamic mutual loss against
    the other's labels; the rounds in the graph (module docstring)."""

    uses_unlabeled = True
    log_reductions: ClassVar[dict] = {"supervised_loss2": "sum", "mutual_loss2": "sum",
                                      "pseudo_kept": "mean", "pseudo_kept2": "mean",
                                      "mean_weight": "mean", "mean_weight2": "mean",
                                      "dmt_round": "mean", "dmt_ratio": "mean"}

    def build(self):
        config = self.config
        self.round_steps = round_length(config)
        self.model = self.make_model()
        self.model2 = self.make_model()
        stage0 = config.replace(max_iteration=max(config.sup_only_steps, 1))
        rounds = config.replace(max_iteration=self.round_steps)
        round_lr = config.dmt_learning_rate or config.learning_rate
        self.optimizer, self.optimizer2, self.round_optimizer, self.round_optimizer2 = (
            GroupOptimizer(settings, model, name=name, **overrides)
            for settings, model, name, overrides in (
                (stage0, self.model, "model", {}), (stage0, self.model2, "model2", {}),
                (rounds, self.model, "round_model", {"learning_rate": round_lr}),
                (rounds, self.model2, "round_model2", {"learning_rate": round_lr})))
        for optimizer in (self.optimizer, self.optimizer2, self.round_optimizer,
                          self.round_optimizer2):
            optimizer.build()
        self.labeler1 = self.labeler2 = None
        if self.config.dmt_labeler == "frozen":
            self.labeler1 = self.make_model()
            self.labeler2 = self.make_model()
            self.labeler1.set_weights(self.model.get_weights())
            self.labeler2.set_weights(self.model2.get_weights())

    def checkpoint_items(self):
        items = {"model": self.model, "model2": self.model2,
                 **self.optimizer.checkpoint_items("optimizer"),
                 **self.optimizer2.checkpoint_items("optimizer2"),
                 **self.round_optimizer.checkpoint_items("round_optimizer"),
                 **self.round_optimizer2.checkpoint_items("round_optimizer2")}
        if self.labeler1 is not None:
            items.update(labeler1=self.labeler1, labeler2=self.labeler2)
        return items

    @property
    def eval_model(self):
        """Network `dmt_eval_network` (1: "model", 2: "model2")."""
        return self.model2 if self.config.dmt_eval_network == 2 else self.model

    @classmethod
    def eval_parts(cls, config, model):
        return model, {"model2" if config.dmt_eval_network == 2 else "model": model}

    def networks(self):
        return [(self.model, self.optimizer), (self.model2, self.optimizer2)]

    @property
    def round(self):
        """int32 index of the current round (from the global step)."""
        return round_index(self.ssl_step, self.round_steps, len(self.config.dmt_ratios))

    @property
    def ratio(self):
        """float32 selection ratio of the current round."""
        return tf.gather(tf.constant(self.config.dmt_ratios, tf.float32), self.round)

    def start_round_if_due(self):
        """At a round's first step: labeller k <- network k (frozen labellers) and both round
        optimizers restart. Returns the bool condition."""
        def freeze():
            ema_update(self.labeler1.weights, self.model.weights, 0.0)
            ema_update(self.labeler2.weights, self.model2.weights, 0.0)
            return tf.constant(True)
        due = round_starts(self.ssl_step, self.round_steps, len(self.config.dmt_ratios))
        if self.labeler1 is not None:
            tf.cond(due, freeze, lambda: tf.constant(False))
        restart_optimizer(self.round_optimizer, due)
        restart_optimizer(self.round_optimizer2, due)
        return due

    def class_thresholds(self, labels, confidence):
        """The round's class thresholds (its ratio picked in the graph)."""
        config = self.config

        def at(ratio):
            return lambda: class_thresholds_tf(labels, confidence, config.num_classes, ratio,
                                               subsample=config.dmt_subsample,
                                               rule=config.dmt_selection)
        ratios = [float(r) for r in config.dmt_ratios]
        if len(set(ratios)) == 1:
            return at(ratios[0])()
        return tf.switch_case(self.round, [at(r) for r in ratios])

    def pseudo_labels(self, labeler, inputs):
        """(class-balanced pseudo labels int32 [B, H, W], confidence [B, H, W]) of
        `labeler` on `inputs` at the round's ratio, without gradient; padding pixels get
        ignore_label."""
        config = self.config
        logits = labeler(inputs, training=config.dmt_labeler_train_mode)["logits"]
        probs = tf.nn.softmax(tf.stop_gradient(tf.cast(logits, tf.float32)))
        labels = tf.argmax(probs, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(probs, axis=-1)
        padding = padding_pixels(inputs)
        thresholds = self.class_thresholds(tf.where(padding, -1, labels), confidence)
        labels = select_pseudo_labels_tf(labels, confidence, thresholds, config.ignore_label)
        return tf.where(padding, config.ignore_label, labels), confidence

    def train_step(self, labeled, unlabeled=None):
        config = self.config
        inputs_l, labels = labeled
        rows_l = num_rows(inputs_l)
        self.start_round_if_due()        # before the labellers forward (program order)
        if self.labeler1 is not None:
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
        self.round_optimizer.apply(tape, loss)
        self.round_optimizer2.apply(tape, loss)
        del tape
        return {"loss": loss, **logs, "dmt_round": tf.cast(self.round, tf.float32),
                "dmt_ratio": self.ratio, "learning_rate": self.round_optimizer.learning_rate()}


KEYS = {
    "sup_only_steps": SEMI_KEYS["sup_only_steps"],
    "dmt_gamma1": Key("float", 5.0, "DMT weight exponent where the two networks agree"
                      " (p[y]^gamma1; VOC 5, Cityscapes 3)", bounds=(0, 100)),
    "dmt_gamma2": Key("float", 5.0, "DMT weight exponent where they disagree and the labeller"
                      " is at least as confident (p[y]^gamma2; VOC 5, Cityscapes 3)",
                      bounds=(0, 100)),
    "dmt_ratios": Key("list", [0.2, 0.4, 0.6, 0.8, 1.0], "DMT: one round per entry, each the"
                      " fraction of each predicted class's pixels kept as pseudo labels, by"
                      " confidence (the code: 0.2, 0.4, 0.6, 0.8, 1.0)"),
    "dmt_round_steps": Key("int", 0, "DMT steps per round (0: the steps after sup_only_steps"
                           " split evenly; VOC 4, Cityscapes 10 epochs of the unlabeled set)"),
    "dmt_learning_rate": Key("float", 0.0, "DMT rounds' learning rate, poly over each round"
                             " (0: learning_rate; VOC 1e-3 after a 2e-3 stage 0, Cityscapes"
                             " 4e-3)"),
    "dmt_eval_network": Key("int", 1, "DMT network that validation, evaluate, export and"
                            " predict use: 1 (\"model\") or 2 (\"model2\")", (1, 2)),
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
