"""Framework: owns the models, optimizers and the per-replica train step of one regime.

The trainer (ssma_tf/training/trainer.py) owns the strategy, data, loop, checkpoints and
summaries. `build_framework` (frameworks/build.py) makes a framework: it sets
`framework.step` (int64 tf.Variable, the global step, also saved in checkpoints; inside
train_step it counts the steps done before this one) and calls `build()` inside
`strategy.scope()`. `global_batch_size` is the labeled images per step over all replicas,
`global_unlabeled_batch_size` likewise for `uses_unlabeled`.

Model contract (what a framework may rely on from `model_builder`):
- `model_builder()` builds a new keras.Model: inputs {modality: [B, H, W, C]}, outputs a
  dict with "logits" [B, H, W, num_classes] (the evaluated output) and maybe more;
- `model_builder(features=("decoder",))` (via `make_model`, with the class attribute
  `model_features`) asks for a model whose outputs also include a tensor
  `feature_<name>` per requested name (e.g. U2PL's representation input); the model
  registry implements it, a framework only passes the names through;
- `model.output_loss_weights` {output: weight} (default {"logits": 1.0}) names the trained
  outputs, `model.output_loss_kinds` {output: kind} their loss ("pixel_ce" by default, or
  "multilabel_bce" for an image-level [B, C] output; frameworks/losses.py), and
  `model.output_penalty_weights` {output: weight} per-image [B] penalties;
- every other output (`feature_*` above all) is left out of the losses; a framework that
  wants one reads it from the outputs dict itself.

Logged values: `train_step` returns {name: scalar}; the trainer reduces each over the
replicas as `log_reduction(name)` says (`log_reductions` overrides the default: SUM for
names ending in "loss", which are already divided by the global batch, MEAN otherwise) and
brings them to the host only at log, save and eval steps, where any non-finite value
stops the run.
"""

from typing import ClassVar

import tensorflow as tf

from ssma_tf.frameworks.losses import hard_pseudo_labels, penalty_loss, supervised_loss
from ssma_tf.frameworks.pseudo_balance import PriorBalance
from ssma_tf.optim import GroupOptimizer
from ssma_tf.registry import Key

REDUCTIONS = {"sum": tf.distribute.ReduceOp.SUM, "mean": tf.distribute.ReduceOp.MEAN}


class Framework:
    """Base class: subclasses implement `build` and `train_step`."""

    uses_unlabeled = False
    two_views = False          # unlabeled stream yields (view1, view2) when True
    eval_item = "model"        # the checkpoint_items() key of eval_model (restored alone)
    model_features = ()        # feature outputs `make_model` asks the builder for
    log_reductions: ClassVar[dict] = {}   # {logged name: "sum" | "mean"}, see log_reduction

    def __init__(self, config, model_builder):
        self.config = config
        self.model_builder = model_builder
        self.step = None
        self.pseudo_balance = None     # a PriorBalance with `pseudo_balance: prior`
        self.global_batch_size = config.batch_size
        self.global_unlabeled_batch_size = config.unlabeled_batch_size or config.batch_size

    def build(self):
        """Create models, optimizers (built) and metrics; called INSIDE strategy.scope()."""
        raise NotImplementedError

    def checkpoint_items(self) -> dict:
        """Everything to save besides the step: models, optimizers, teachers..."""
        raise NotImplementedError

    def train_step(self, labeled, unlabeled=None) -> dict:
        """One per-replica step; losses divided by the GLOBAL batch; returns scalars to log
        (reduced over replicas per `log_reduction`)."""
        raise NotImplementedError

    def log_reduction(self, name):
        """How logged value `name` is reduced over replicas: `log_reductions[name]`, else
        SUM for names ending in "loss" (per-replica shares of a global mean), else MEAN
        (rates, weights, accuracies)."""
        kind = self.log_reductions.get(name, "sum" if name.endswith("loss") else "mean")
        return REDUCTIONS[kind]

    @property
    def eval_model(self):
        """The model evaluate/export use."""
        raise NotImplementedError

    @classmethod
    def eval_parts(cls, config, model):
        """(eval model, {checkpoint item: keras.Model}) for restoring a trained run's eval
        model alone: `model` is config.model built by itself (float32); the items are
        restored from the checkpoint and the eval model is built around them. Here `model`
        itself as `eval_item`; a framework whose eval model holds more (a class filter)
        builds it here."""
        return model, {cls.eval_item: model}

    def networks(self):
        """[(model, optimizer)] of the networks trained on labels (not an EMA teacher)."""
        raise NotImplementedError

    def supervised_only_step(self, labeled):
        """One per-replica step of every network in `networks()` on the labeled batch alone:
        a supervised step, and for semi-supervised frameworks their first `sup_only_steps`
        steps (U2PL's sup_only_epoch), before pseudo labels are trusted."""
        inputs, labels = labeled
        total = 0.0
        for model, optimizer in self.networks():
            with tf.GradientTape() as tape:
                outputs = model(inputs, training=True)
                loss = self.supervised_loss(labels, outputs)
                loss += self.penalty_loss(model, outputs, self.global_batch_size)
            optimizer.apply(tape, loss)
            total += loss
        return {"loss": total, "learning_rate": optimizer.learning_rate()}

    @property
    def ssl_step(self):
        """Steps done since the semi-supervised phase began (negative before it): the clock
        of ramp-ups and of the EMA decay."""
        return self.step - self.config.sup_only_steps

    # --- helpers shared by subclasses ---

    def make_model(self, **options):
        """A new model from `model_builder`, asking for the `model_features` outputs."""
        if self.model_features:
            options.setdefault("features", tuple(self.model_features))
        return self.model_builder(**options)

    def make_optimizer(self, model, name="model", **overrides):
        """A built GroupOptimizer (encoder/decoder/norm groups, poly LR) for `model`; the
        `overrides` (optim.OVERRIDES: learning_rate, beta_1, schedule...) replace the
        config's settings for this model only (e.g. a discriminator's own Adam)."""
        optimizer = GroupOptimizer(self.config, model, name=name, **overrides)
        optimizer.build()
        return optimizer

    @property
    def ohem(self):
        """(thresh, min_kept per image) or None, from the config."""
        if not self.config.ohem:
            return None
        min_kept = self.config.ohem_min_kept or int(
            0.08 * self.config.height * self.config.width)
        return (self.config.ohem_thresh, min_kept)

    def penalty_loss(self, model, outputs, global_batch_size):
        """`model`'s weighted per-image penalty outputs (model.output_penalty_weights, e.g.
        TokenFusion's mask L1) over all rows of `outputs`, divided by the global batch."""
        weights = getattr(model, "output_penalty_weights", None) or {}
        return penalty_loss(outputs, weights, global_batch_size=global_batch_size)

    @property
    def loss_weights(self):
        """{output name: loss weight} of the model (model.output_loss_weights)."""
        return getattr(self.eval_model, "output_loss_weights", None) or {"logits": 1.0}

    @property
    def loss_kinds(self):
        """{output name: loss kind} of the model (model.output_loss_kinds; an output not
        named there is "pixel_ce")."""
        return getattr(self.eval_model, "output_loss_kinds", None) or {}

    @property
    def pixel_loss_weights(self):
        """`loss_weights` of the pixel outputs ("pixel_ce"), without image-level heads."""
        kinds = self.loss_kinds
        return {name: weight for name, weight in self.loss_weights.items()
                if kinds.get(name, "pixel_ce") == "pixel_ce"}

    def pseudo_output_names(self):
        """The labeler outputs that make targets: "logits", or with `pseudo_targets:
        per_output` every loss-weighted pixel output (image-level outputs then learn the
        classes present in the "logits" targets)."""
        if self.config.pseudo_targets == "logits":
            return ["logits"]
        return list(self.pixel_loss_weights)

    def build_pseudo_balance(self, labelers=("",)):
        """With `pseudo_balance: prior`, `self.pseudo_balance` = a PriorBalance over
        `labelers` x `pseudo_output_names()` (keys "labeler/output"); call in `build`."""
        if self.config.pseudo_balance == "prior":
            keys = [f"{labeler}/{name}" for labeler in labelers
                    for name in self.pseudo_output_names()]
            self.pseudo_balance = PriorBalance(self.config.num_classes, keys,
                                               self.config.ignore_label)

    def pseudo_balance_items(self):
        """{"pseudo_balance": it} for `checkpoint_items`, or {} when off."""
        return {} if self.pseudo_balance is None else {"pseudo_balance": self.pseudo_balance}

    def count_labels(self, labels):
        """Adds a labeled batch to the PriorBalance's class prior (nothing when off)."""
        if self.pseudo_balance is not None:
            self.pseudo_balance.observe_labels(labels)

    def pseudo_targets(self, outputs, *, inputs, labeler="", first_unlabeled=0,
                       make_target=None):
        """Targets made by `make_target(logits)` from a labeler's `outputs` (computed on the
        `inputs` dict; default: hard pseudo labels with the config's `pseudo_threshold`,
        `pseudo_class_ratio` and `ignore_label`): one, from its "logits", for every output
        (`pseudo_targets: logits`), or with `per_output` a dict {name: target} over the
        loss-weighted outputs (losses.target_for). With `self.pseudo_balance` (a PriorBalance),
        the logits first get `labeler`'s class offsets, fitted on rows [first_unlabeled, end)."""
        if make_target is None:
            def make_target(logits):
                return hard_pseudo_labels(logits, inputs, threshold=self.config.pseudo_threshold,
                                          class_ratio=self.config.pseudo_class_ratio,
                                          ignore_label=self.config.ignore_label)
        targets = {}
        for name in self.pseudo_output_names():
            logits = outputs[name]
            if self.pseudo_balance is not None:
                logits = self.pseudo_balance.adjust(f"{labeler}/{name}", logits, inputs,
                                                    first_unlabeled)
            targets[name] = make_target(logits)
        return targets["logits"] if self.config.pseudo_targets == "logits" else targets

    def supervised_loss(self, labels, outputs, *, global_batch_size=None, ohem=True,
                        pixel_weights=None):
        """Weighted loss over `loss_weights`, each output's by its kind (`loss_kinds`),
        divided by the global batch; `pixel_weights` [B, H, W] weight the pixel losses."""
        return supervised_loss(
            labels, outputs, self.loss_weights, num_classes=self.config.num_classes,
            ignore_label=self.config.ignore_label,
            global_batch_size=global_batch_size or self.global_batch_size,
            ohem=self.ohem if ohem else None, kinds=self.loss_kinds,
            pixel_weights=pixel_weights)


SEMI_KEYS = {
    "sup_only_steps": Key("int", 0, "first steps on labeled batches only (U2PL's sup_only_epoch);"
                          " the teacher then copies the student and ramp-up / EMA count from"
                          " there"),
    "rampup_steps": Key("int", 0, "sigmoid ramp-up of the unlabeled loss weight (0: off)"),
    "pseudo_threshold": Key("float", 0.0, "hard pseudo labels: pixels whose top softmax"
                            " probability is below this are not trained (0: all, as M3L, CPS)",
                            bounds=(0, 1)),
    "pseudo_class_ratio": Key("float", 0.0, "hard pseudo labels: every predicted class also"
                              " keeps its top fraction of pixels by confidence (DMT's"
                              " class-balanced selection, per batch; 0: off)", bounds=(0, 1)),
    "pseudo_rows": Key("str", "all", "rows trained on pseudo labels: all (M3L, CPS) or"
                       " unlabeled (U2PL, s4GAN)", ("all", "unlabeled")),
    "pseudo_targets": Key("str", "logits", "logits: the labeler's main output labels every"
                          " loss-weighted output (M3L, CPS); per_output: each output learns"
                          " from the labeler's same output (a LinearFusion stream from that"
                          " stream)", ("logits", "per_output")),
    "pseudo_balance": Key("str", "none", "prior: per-class logit offsets, fitted online, make"
                          " each class's share of the pseudo labels match its share of the"
                          " labeled pixels (soft targets shift too); none: off",
                          ("none", "prior")),
    "cutmix": Key("bool", False, "CutMix on the unlabeled batches"),
    "teacher_train_mode": Key("bool", True, "labeler forwards use batch statistics and dropout"
                              " (as M3L, TorchSemiSeg); false: inference mode"),
}
