"""s4GAN (Mittal, Tatarchenko, Brox, TPAMI 2019): a discriminator on [class map | image]
gates self-training and supplies a feature-matching loss; there is no adversarial loss.

Written from the released code's behaviour (sud0301/semisup-semseg at 586609b) as a
description; no code is taken from it.

Discriminator D (built here for any model, not a registered model): its input is the C-map
(softmax of the segmenter's "logits", or the one-hot truth) concatenated with every input
modality (sorted by name; a multimodal model's D sees all of them), each modality min-max
normalised to [0, 1] by its own minimum and maximum over the whole batch. Four convs of
kernel 4, stride 2, padding 1 (PyTorch arithmetic: 321 -> 160 -> 80 -> 40 -> 20) with
d_channels x (1, 2, 4, 8) channels, each followed by LeakyReLU(0.2), the first three by
channel dropout (Dropout2d, `d_dropout`); global average pooling (the code's fixed AvgPool
covers the whole last map at its crops) gives the feature `f` [B, 8 d_channels]; a dense
layer gives the real/fake logit (the code's Linear + sigmoid, the sigmoid folded into the
BCE). D has its own Adam (d_learning_rate, betas d_beta_1 / d_beta_2, poly decay over
max_iteration with the config's `power`, or constant with `d_schedule`; no warm-up, no
learning-rate multipliers). D runs in training mode (dropout on) in all its forwards.

One step (rows L labeled, U unlabeled; the segmenter S forwards the two batches apart):
  L_ce = supervised CE of S(x_L) (every weighted output, as every framework);
  p_U = softmax(S(x_U)["logits"]); (s_U, f_U) = D([p_U | x_U]); (_, f_GT) = D([onehot y_L | x_L]);
  L_fm = mean_k | mean_b f_GT[b, k] - mean_b f_U[b, k] |  (L1 of the batch-mean features);
  self-training: the unlabeled images with s_U > threshold_st are selected, their pseudo
    labels are the argmax of their own prediction (hard, no pixel threshold; crop padding
    left out), L_st = CE over the selected images' pixel outputs (the mean over them),
    gradients through their predictions; no ST at the first semi-supervised step (the code:
    not at iteration 0, D untrained);
  L_S = L_ce + lambda_fm L_fm + lambda_st L_st  -> S's optimizer (D frozen: only S's
    variables are differentiated);
  L_D = 1/2 [BCE(D([stop_grad p_U | x_U]), 0) + BCE(D([onehot y_L | x_L]), 1)] -> D's
    optimizer. Both losses see the weights from before the step, as the code's order
    (backward S, backward D, then step both).
One-hot truth: ignore pixels (ignore_label, labels outside [0, C)) are all-zero, as the
code's one_hot of 255.

Where this differs from the released code:
- The code draws D's real images from a third loader (the labeled set in another shuffle);
  the trainer gives two streams, so the real input is the step's labeled batch. The code's
  quirk there (the GT images divided by the labeled batch's max - min, not their own) is
  then moot: both are the same batch.
- Across replicas, L_fm is each replica's L1 of its own batch means, averaged over the
  replicas (exact on one replica); L_st is divided by the number of selected images over
  all replicas (all-reduced), so it is the mean over every selected image.
- Image-level outputs (model.output_loss_kinds "multilabel_bce") train on the labeled
  batch only; the ST loss covers the pixel outputs.
- `sup_only_steps` (off by default) trains S alone on labels first; D starts after.

`mlmt: true` adds MLMT (frameworks/mlmt.py): a multi-label classifier on every modality,
trained as a mean teacher after each step on the same labeled batch and on the unlabeled
stream's two views (S and D see the first); the eval model is then the segmenter with the
teacher's class filter (`mlmt_filter`, default zero: absent classes' logits x 0, as the code),
so validation, evaluate.py, export and predict apply it; `--override mlmt_filter=none`
evaluates the segmenter alone.

Modalities: D and the classifier see every modality; photometric augmentation touches the
colour modalities only, geometric augmentation all of them jointly (the input pipeline).
s4GAN masks no modality; a model with its own modality dropout (a model key) trains as
usual, and `--missing-modality` at evaluation zeroes the modality for every network.

Logged: loss, supervised_loss, fm_loss, st_loss (unweighted), d_loss, st_fraction (the
fraction of unlabeled images selected, averaged over replicas), d_score_fake / d_score_real
(mean D probabilities), learning_rate, d_learning_rate; with MLMT also mlmt_loss,
mlmt_bce_loss, mlmt_cosine_loss (unweighted), mlmt_weight, mlmt_learning_rate.
"""

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from ssma_tf.frameworks import mlmt
from ssma_tf.frameworks.base import SEMI_KEYS, Framework
from ssma_tf.frameworks.losses import hard_pseudo_labels, segmentation_loss, valid_mask
from ssma_tf.registry import Key, register_framework

LEAKY_SLOPE = 0.2


def build_discriminator(in_channels, *, channels=64, dropout=0.5, name="discriminator"):
    """s4GAN's fully-convolutional D: [B, H, W, in_channels] -> {"logit": [B, 1] (real vs
    fake, before the sigmoid), "features": [B, 8 channels] (globally pooled, for feature
    matching)}. Convs of kernel 4, stride 2, padding 1 as PyTorch pads (H -> floor(H/2))."""
    inputs = keras.Input((None, None, in_channels), name="d_input")
    x = inputs
    for index, mult in enumerate((1, 2, 4, 8), start=1):
        x = keras.layers.ZeroPadding2D(1, name=f"d_pad{index}")(x)
        x = keras.layers.Conv2D(channels * mult, 4, strides=2, padding="valid",
                                name=f"d_conv{index}")(x)
        x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"d_relu{index}")(x)
        if index < 4 and dropout > 0:
            x = keras.layers.SpatialDropout2D(dropout, name=f"d_drop{index}")(x)
    features = keras.layers.GlobalAveragePooling2D(name="d_pool")(x)
    logit = keras.layers.Dense(1, name="d_classifier")(features)
    return keras.Model(inputs, {"logit": logit, "features": features}, name=name)


def minmax_images(inputs):
    """Every modality of the `inputs` dict (sorted by name), each min-max normalised to
    [0, 1] by its minimum and maximum over the whole batch (the code's norm of the RGB
    batch), concatenated on the channels: float32 [B, H, W, sum of channels]."""
    parts = []
    for name in sorted(inputs):
        value = tf.cast(inputs[name], tf.float32)
        low, high = tf.reduce_min(value), tf.reduce_max(value)
        parts.append((value - low) / tf.maximum(high - low, 1e-12))
    return tf.concat(parts, axis=-1)


def one_hot_truth(labels, num_classes, ignore_label=255):
    """float32 [B, H, W, C] one-hot of the label map; ignored pixels all-zero."""
    labels = tf.cast(labels, tf.int32)
    valid = valid_mask(labels, num_classes, ignore_label)
    return tf.one_hot(tf.where(valid, labels, 0), num_classes) * tf.cast(valid,
                                                                         tf.float32)[..., None]


def feature_matching_loss(real_features, fake_features):
    """mean_k | mean_b real[b, k] - mean_b fake[b, k] |: L1 between the batch means of D's
    pooled features of the truth and of the predictions."""
    real_mean = tf.reduce_mean(tf.cast(real_features, tf.float32), axis=0)
    fake_mean = tf.reduce_mean(tf.cast(fake_features, tf.float32), axis=0)
    return tf.reduce_mean(tf.abs(real_mean - fake_mean))


def st_selection(scores, threshold):
    """bool [B]: the images whose D probability `scores` [B] or [B, 1] is above
    `threshold` (strictly, as the code)."""
    return tf.reshape(tf.cast(scores, tf.float32), [-1]) > threshold


def self_training_targets(logits, inputs, selected, ignore_label=255):
    """int32 [B, H, W]: the argmax of `logits` on the selected rows (crop padding of
    `inputs` ignored), `ignore_label` everywhere on the other rows; no gradient."""
    labels = hard_pseudo_labels(logits, inputs, ignore_label=ignore_label)
    return tf.where(selected[:, None, None], labels, ignore_label)


def self_training_loss(outputs, weights, targets, *, num_classes, ignore_label,
                       global_selected):
    """sum over the pixel outputs in `weights` of weight * their CE against `targets`
    (per-image mean over valid pixels, rows without a valid target add 0), summed over the
    rows / `global_selected` (at least 1)."""
    divisor = tf.maximum(tf.cast(global_selected, tf.float32), 1.0)
    total = 0.0
    for name, weight in weights.items():
        total += weight * segmentation_loss(targets, outputs[name], num_classes=num_classes,
                                            ignore_label=ignore_label,
                                            global_batch_size=divisor)
    return total


def discriminator_loss(real_logits, fake_logits, *, global_real, global_fake):
    """1/2 [BCE(real, 1) + BCE(fake, 0)], each the mean over its global batch (the rows of
    this replica summed and divided by `global_real` / `global_fake`)."""
    real_logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
    fake_logits = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    real = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(real_logits),
                                                   logits=real_logits)
    fake = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake_logits),
                                                   logits=fake_logits)
    return 0.5 * (tf.reduce_sum(real) / tf.cast(global_real, tf.float32)
                  + tf.reduce_sum(fake) / tf.cast(global_fake, tf.float32))


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _global_sum(value):
    """`value` summed over the replicas (itself outside a distributed step)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


class S4GAN(Framework):
    """Segmenter + discriminator on its own Adam; see the module docstring for the step."""

    uses_unlabeled = True
    log_reductions: ClassVar[dict] = {"st_fraction": "mean", "d_score_fake": "mean",
                                      "d_score_real": "mean", "d_learning_rate": "mean",
                                      "mlmt_weight": "mean", "mlmt_learning_rate": "mean"}

    def __init__(self, config, model_builder):
        super().__init__(config, model_builder)
        self.two_views = bool(config.mlmt)     # MLMT: teacher and student views

    def build(self):
        self.model = self.make_model()
        self.optimizer = self.make_optimizer(self.model)
        self.mlmt = None
        self._eval_model = self.model
        if self.config.mlmt:
            self.mlmt = mlmt.MLMTBranch(self, mlmt.input_channels(self.model))
            self._eval_model = self.mlmt.eval_model(self.model)
        modality_channels = sum(int(t.shape[-1]) for t in self.model.inputs)
        self.discriminator = build_discriminator(
            self.config.num_classes + modality_channels, channels=self.config.d_channels,
            dropout=self.config.d_dropout)
        self.d_optimizer = self.make_optimizer(
            self.discriminator, name="discriminator", optimizer="adam",
            learning_rate=self.config.d_learning_rate, beta_1=self.config.d_beta_1,
            beta_2=self.config.d_beta_2, schedule=self.config.d_schedule,
            end_learning_rate=0.0, warmup_steps=0, lr_multipliers={})

    def checkpoint_items(self):
        # optimizer items are named "optimizer_*": a checkpoint stores each variable under
        # the first name that reaches it, and "<model>_variables" must come first (the
        # trainer's resume check reads the models' variables there)
        return {"model": self.model, "discriminator": self.discriminator,
                **self.optimizer.checkpoint_items(),
                **self.d_optimizer.checkpoint_items("optimizer_discriminator"),
                **(self.mlmt.checkpoint_items() if self.mlmt else {})}

    @property
    def eval_model(self):
        """The segmenter, with MLMT's class filter when `mlmt` (and mlmt_filter not off)."""
        return self._eval_model

    @classmethod
    def eval_parts(cls, config, model):
        if not config.mlmt or config.mlmt_filter == "none":
            return super().eval_parts(config, model)
        teacher = mlmt.classifier_from_config(config, mlmt.input_channels(model))
        return (mlmt.wrap_for_eval(config, model, teacher),
                {"model": model, "classifier_teacher": teacher})

    @property
    def loss_weights(self):
        return getattr(self.model, "output_loss_weights", None) or {"logits": 1.0}

    @property
    def loss_kinds(self):
        return getattr(self.model, "output_loss_kinds", None) or {}

    def networks(self):
        return [(self.model, self.optimizer)]

    def discriminator_input(self, class_map, inputs):
        """[class_map | min-max normalised modalities]: D's input, float32."""
        return tf.concat([tf.cast(class_map, tf.float32), minmax_images(inputs)], axis=-1)

    def discriminate(self, class_map, inputs):
        """D's {"logit", "features"} (float32) on [class_map | inputs], training mode."""
        out = self.discriminator(self.discriminator_input(class_map, inputs), training=True)
        return {k: tf.cast(v, tf.float32) for k, v in out.items()}

    def train_step(self, labeled, unlabeled=None):
        inputs_l, labels = labeled
        views = unlabeled if self.two_views else (unlabeled, unlabeled)
        inputs_u = views[0]
        config = self.config
        real = self.discriminator_input(
            one_hot_truth(labels, config.num_classes, config.ignore_label), inputs_l)
        rows_global = self.global_batch_size + self.global_unlabeled_batch_size
        st_on = tf.cast(self.ssl_step > 0, tf.bool)
        with tf.GradientTape() as tape:
            out_l = self.model(inputs_l, training=True)
            out_u = self.model(inputs_u, training=True)
            supervised = self.supervised_loss(labels, out_l)
            probs_u = tf.nn.softmax(tf.cast(out_u["logits"], tf.float32))
            fake = self.discriminate(probs_u, inputs_u)
            real_out = {k: tf.cast(v, tf.float32)
                        for k, v in self.discriminator(real, training=True).items()}
            fm = feature_matching_loss(real_out["features"], fake["features"]) / _num_replicas()
            scores = tf.nn.sigmoid(tf.reshape(fake["logit"], [-1]))
            selected = st_selection(scores, config.threshold_st) & st_on
            global_selected = _global_sum(tf.reduce_sum(tf.cast(selected, tf.float32)))
            targets = self_training_targets(out_u["logits"], inputs_u, selected,
                                            config.ignore_label)
            st = self_training_loss(out_u, self.pixel_loss_weights, targets,
                                    num_classes=config.num_classes,
                                    ignore_label=config.ignore_label,
                                    global_selected=global_selected)
            penalty = (self.penalty_loss(self.model, out_l, rows_global)
                       + self.penalty_loss(self.model, out_u, rows_global))
            loss = supervised + config.lambda_fm * fm + config.lambda_st * st + penalty
        self.optimizer.apply(tape, loss)
        fake_d = self.discriminator_input(tf.stop_gradient(probs_u), inputs_u)
        with tf.GradientTape() as tape:
            logit_fake = self.discriminator(fake_d, training=True)["logit"]
            logit_real = self.discriminator(real, training=True)["logit"]
            d_loss = discriminator_loss(logit_real, logit_fake,
                                        global_real=self.global_batch_size,
                                        global_fake=self.global_unlabeled_batch_size)
        self.d_optimizer.apply(tape, d_loss)
        logs = {}
        if self.mlmt is not None:
            logs = self.mlmt.train_step(inputs_l, labels, *views, self.ssl_step)
        return {**logs, "loss": loss, "supervised_loss": supervised, "fm_loss": fm, "st_loss": st,
                "d_loss": d_loss,
                "st_fraction": tf.reduce_mean(tf.cast(selected, tf.float32)),
                "d_score_fake": tf.reduce_mean(scores),
                "d_score_real": tf.reduce_mean(tf.nn.sigmoid(real_out["logit"])),
                "learning_rate": self.optimizer.learning_rate(),
                "d_learning_rate": self.d_optimizer.learning_rate()}


KEYS = {
    "sup_only_steps": dataclasses.replace(
        SEMI_KEYS["sup_only_steps"], doc="first steps train the segmenter alone on labeled"
        " batches (the discriminator is not trained, no self-training); s4GAN has none (0)"),
    "lambda_fm": Key("float", 0.1, "weight of the feature-matching loss (s4GAN: 0.1)"),
    "lambda_st": Key("float", 1.0, "weight of the self-training loss (s4GAN: 1.0)"),
    "threshold_st": Key("float", 0.6, "an unlabeled image self-trains on its argmax when the"
                        " discriminator's score is above this (s4GAN: 0.6 VOC / Context, 0.7"
                        " Cityscapes)", bounds=(0, 1)),
    "d_learning_rate": Key("float", 1e-4, "discriminator Adam learning rate (s4GAN: 1e-4"
                           " VOC / Context, 1e-5 Cityscapes)"),
    "d_beta_1": Key("float", 0.9, "discriminator Adam beta_1 (s4GAN: 0.9)", bounds=(0, 1)),
    "d_beta_2": Key("float", 0.99, "discriminator Adam beta_2 (s4GAN: 0.99)", bounds=(0, 1)),
    "d_schedule": Key("str", "poly", "discriminator learning rate: poly decay over"
                      " max_iteration with `power` (s4GAN) or constant", ("poly", "constant")),
    "d_channels": Key("int", 64, "discriminator width: its convs have 1, 2, 4, 8 times this"
                      " (s4GAN's ndf 64)"),
    "d_dropout": Key("float", 0.5, "channel dropout after the discriminator's first three"
                     " convs (s4GAN's Dropout2d 0.5; 0: off)", bounds=(0, 1)),
    **mlmt.KEYS,
}
register_framework("s4gan", S4GAN, keys=KEYS)
