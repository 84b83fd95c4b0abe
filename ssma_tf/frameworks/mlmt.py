"""MLMT, s4GAN's image-level branch: a multi-label classifier trained as a mean teacher in the
same run, whose teacher filters the segmenter's classes at evaluation.

Classifier (`build_classifier`): every input modality (sorted by name) concatenated on the
channels, a ResNet v1 (`mlmt_depth` 50 / 101, or `mlmt_units` blocks per stage; width
`mlmt_width`), global average pooling and a dense layer: one logit per class (sigmoid per
class, not softmax). It starts from random weights here (the original starts from ImageNet).

One step (`MLMTBranch.train_step`, run by s4GAN after its own step, on s4GAN's batches):
  L = BCE(sigmoid(student(x_L)), present(y_L)) + w(t) * cos_emb(student(x_U''), teacher(x_U'))
- present(y_L): the classes with at least one valid pixel (ignore pixels excluded);
- BCE per image the mean over the classes, summed over images / the global labeled batch;
- cos_emb: 1 - cos(student logits, teacher logits) per image (CosineEmbeddingLoss with
  target 1), summed / the global unlabeled batch; the teacher's logits carry no gradient;
- x_U' / x_U'' are the unlabeled stream's two views (same geometry, independent colour
  jitter; the student gets the second), so photometric changes touch colour modalities only
  and geometric ones all modalities jointly, as the input pipeline does;
- w(t) = 0 before `mlmt_burnin_steps`, then linear to 1 over `mlmt_ramp_steps` (the code:
  0 for 10 epochs, then 2 % per epoch); t counts the semi-supervised steps (s4GAN's
  supervised-only steps, `sup_only_steps`, do not train the classifier);
- its own SGD (Nesterov, `mlmt_learning_rate` 3e-2, momentum 0.9, weight decay 1e-5, cosine
  to `mlmt_end_learning_rate` 1e-4 over max_iteration), no learning-rate multipliers;
- then teacher <- a_t teacher + (1 - a_t) student over the trainable weights with
  a_t = min(1 - 1/(t+1), `mlmt_ema_decay`) (0.999; the first update copies); BatchNorm
  statistics are copied from the student (the mean-teacher framework's rule). The teacher
  forwards in inference mode.

Class filter (`ClassFilter`, at evaluation, prediction and export): the teacher's sigmoid
scores >= `mlmt_threshold` (0.2) mark the classes present; `mlmt_filter: zero` (default, the
released code) multiplies each absent class's logit map by 0, so it keeps logit 0 and can
still win where every present class is negative; `neg_inf` gives absent classes -1e30 (for
-inf, finite so softmax stays defined when no class passes); `none` evaluates the
segmenter alone. `filtered_segmenter` wraps segmenter + teacher as the eval model (outputs
"logits" filtered, "unfiltered_logits", "class_scores").

Where this differs from the released code: the classifier trains in s4GAN's run on its
labeled and unlabeled batches (the code: a separate run, labeled batch 16 and unlabeled 80,
images resized to 320x320, its own epochs) and sees the training crops, and at evaluation
the whole image; the student view's jitter is the pipeline's (no hue jitter, no blur); the
scores come from the same forward as the segmentation, not from a file matched by line.

Modalities: the classifier, like s4GAN's discriminator, sees every modality. s4GAN and MLMT
mask no modality in training; evaluate.py's `--missing-modality` zeroes a modality for the
segmenter and the classifier alike.
"""

import keras
import tensorflow as tf
from keras import ops

from ssma_tf.frameworks.common import ema_update
from ssma_tf.frameworks.losses import image_bce_loss, present_classes
from ssma_tf.frameworks.mean_teacher import ema_decay
from ssma_tf.models.resnet_v1 import resnet_v1_features
from ssma_tf.registry import Key

FILTERS = ("zero", "neg_inf", "none")
ABSENT_LOGIT = -1e30          # `neg_inf`: stands in for -inf
COSINE_EPS = 1e-12            # CosineEmbeddingLoss's epsilon on the squared norms


def build_classifier(channels, num_classes, *, depth=101, units=None, width=1.0,
                     name="mlmt_classifier"):
    """Multi-label classifier: inputs {modality: [B, H, W, C]} (`channels` {modality: C}),
    output logits [B, num_classes] (module docstring)."""
    inputs = {m: keras.Input((None, None, c), name=m) for m, c in sorted(channels.items())}
    parts = [inputs[m] for m in sorted(inputs)]
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="mlmt_concat")(parts)
    features = resnet_v1_features(x, depth=depth, units=units, width=width, name="backbone")
    pooled = keras.layers.GlobalAveragePooling2D(name="mlmt_pool")(features["P5"])
    logits = keras.layers.Dense(num_classes, name="mlmt_fc")(pooled)
    return keras.Model(inputs, logits, name=name)


def classifier_from_config(config, channels):
    """`build_classifier` with the config's mlmt_* keys."""
    return build_classifier(channels, config.num_classes, depth=config.mlmt_depth,
                            units=config.mlmt_units, width=config.mlmt_width)


def cosine_embedding_loss(student, teacher, *, global_batch_size):
    """sum over rows of 1 - cos(student[b], teacher[b]) / global batch (teacher detached)."""
    student = tf.cast(student, tf.float32)
    teacher = tf.stop_gradient(tf.cast(teacher, tf.float32))
    dot = tf.reduce_sum(student * teacher, axis=-1)
    norms = tf.sqrt((tf.reduce_sum(tf.square(student), -1) + COSINE_EPS)
                    * (tf.reduce_sum(tf.square(teacher), -1) + COSINE_EPS))
    return tf.reduce_sum(1.0 - dot / norms) / tf.cast(global_batch_size, tf.float32)


def consistency_ramp(step, burnin_steps, ramp_steps):
    """0 before `burnin_steps`, then (t - burnin) / ramp_steps up to 1 (1 at once when
    ramp_steps is 0)."""
    step = tf.cast(step, tf.float32)
    if ramp_steps <= 0:
        return tf.cast(step >= burnin_steps, tf.float32)
    return tf.clip_by_value((step - burnin_steps) / ramp_steps, 0.0, 1.0)


class ClassFilter(keras.layers.Layer):
    """(logits [B, H, W, C], scores [B, C]) -> float32 logits with the classes scored below
    `threshold` zeroed (`mode` zero) or set to ABSENT_LOGIT (`neg_inf`)."""

    def __init__(self, threshold=0.2, mode="zero", **kwargs):
        super().__init__(**kwargs)
        if mode not in FILTERS[:2]:
            raise ValueError(f"class filter mode {mode!r}: one of {', '.join(FILTERS[:2])}")
        self.threshold = float(threshold)
        self.mode = mode

    def call(self, logits, scores):
        logits = ops.cast(logits, "float32")
        present = ops.cast(ops.cast(scores, "float32") >= self.threshold, "float32")
        present = present[:, None, None, :]
        if self.mode == "zero":
            return logits * present
        return ops.where(present > 0, logits, ABSENT_LOGIT)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "mode": self.mode}


def filtered_segmenter(model, classifier, *, threshold=0.2, mode="zero"):
    """The eval model: segmenter `model` and `classifier` on the same inputs, outputs
    {"logits": filtered, "unfiltered_logits": the segmenter's, "class_scores": sigmoid}."""
    inputs = {name: keras.Input(tuple(t.shape[1:]), name=name)
              for name, t in model.input.items()}
    logits = model(inputs)["logits"]
    scores = keras.layers.Activation("sigmoid", dtype="float32", name="class_scores")(
        classifier(inputs))
    filtered = ClassFilter(threshold, mode, name="class_filter")(logits, scores)
    return keras.Model(inputs, {"logits": filtered, "unfiltered_logits": logits,
                                "class_scores": scores}, name=f"{model.name}_mlmt")


class MLMTBranch:
    """The classifier, its EMA teacher and optimizer inside a framework (`framework`: its
    config, `make_optimizer`, global batch sizes); see the module docstring."""

    def __init__(self, framework, channels):
        config = framework.config
        self.config = config
        self.framework = framework
        self.classifier = classifier_from_config(config, channels)
        self.teacher = classifier_from_config(config, channels)
        self.teacher.set_weights(self.classifier.get_weights())
        self.optimizer = framework.make_optimizer(
            self.classifier, name="classifier", optimizer="sgd",
            learning_rate=config.mlmt_learning_rate, momentum=config.mlmt_momentum,
            weight_decay=config.mlmt_weight_decay, nesterov=True, schedule="cosine",
            end_learning_rate=config.mlmt_end_learning_rate, warmup_steps=0,
            lr_multipliers={})

    def checkpoint_items(self):
        return {"classifier": self.classifier, "classifier_teacher": self.teacher,
                **self.optimizer.checkpoint_items("optimizer_classifier")}

    def eval_model(self, model):
        """`model` with the teacher's class filter (`model` itself with mlmt_filter none)."""
        return wrap_for_eval(self.config, model, self.teacher)

    def train_step(self, inputs_l, labels, teacher_view, student_view, step):
        """One classifier step (module docstring); `step` counts the semi-supervised steps.
        Returns its logged values."""
        config, fw = self.config, self.framework
        targets = present_classes(labels, config.num_classes, config.ignore_label)
        teacher_logits = tf.stop_gradient(self.teacher(teacher_view, training=False))
        weight = consistency_ramp(step, config.mlmt_burnin_steps, config.mlmt_ramp_steps)
        with tf.GradientTape() as tape:
            bce = image_bce_loss(targets, self.classifier(inputs_l, training=True),
                                 global_batch_size=fw.global_batch_size)
            cosine = cosine_embedding_loss(self.classifier(student_view, training=True),
                                           teacher_logits,
                                           global_batch_size=fw.global_unlabeled_batch_size)
            loss = bce + weight * cosine
        self.optimizer.apply(tape, loss)
        ema_update(self.teacher.trainable_weights, self.classifier.trainable_weights,
                   ema_decay(step, config.mlmt_ema_decay))
        ema_update(self.teacher.non_trainable_weights, self.classifier.non_trainable_weights,
                   0.0)
        return {"mlmt_loss": loss, "mlmt_bce_loss": bce, "mlmt_cosine_loss": cosine,
                "mlmt_weight": weight, "mlmt_learning_rate": self.optimizer.learning_rate()}


def wrap_for_eval(config, model, classifier):
    """`filtered_segmenter` of `model` and `classifier` per the config, or `model` with
    `mlmt_filter: none`."""
    if config.mlmt_filter == "none":
        return model
    return filtered_segmenter(model, classifier, threshold=config.mlmt_threshold,
                              mode=config.mlmt_filter)


def input_channels(model):
    """{modality: channels} of a model with dict inputs."""
    return {name: int(t.shape[-1]) for name, t in model.input.items()}


KEYS = {
    "mlmt": Key("bool", False, "s4GAN: train the MLMT multi-label classifier (mean teacher) in"
                " the same run and filter the evaluated classes by its teacher"),
    "mlmt_threshold": Key("float", 0.2, "MLMT: a class is present when the teacher's sigmoid"
                          " score is at least this (the code: 0.2)", bounds=(0, 1)),
    "mlmt_filter": Key("str", "zero", "MLMT class filter at evaluation: zero (absent classes'"
                       " logits x 0, the code), neg_inf (absent classes -1e30) or none (the"
                       " segmenter alone)", FILTERS),
    "mlmt_depth": Key("int", 101, "MLMT classifier ResNet depth (the code: 101)", (50, 101)),
    "mlmt_units": Key("list", None, "MLMT classifier blocks per stage; overrides mlmt_depth"
                      " (e.g. [1, 1, 1, 1] for tests)"),
    "mlmt_width": Key("float", 1.0, "MLMT classifier channel width multiplier"),
    "mlmt_learning_rate": Key("float", 3e-2, "MLMT SGD-Nesterov learning rate (the code: 3e-2)"),
    "mlmt_end_learning_rate": Key("float", 1e-4, "MLMT cosine schedule's final learning rate"
                                  " (the code: 1e-4)"),
    "mlmt_momentum": Key("float", 0.9, "MLMT SGD momentum (the code: 0.9)", bounds=(0, 1)),
    "mlmt_weight_decay": Key("float", 1e-5, "MLMT SGD weight decay (the code: 1e-5)"),
    "mlmt_ema_decay": Key("float", 0.999, "MLMT teacher EMA decay cap (the code: 0.999)",
                          bounds=(0, 1)),
    "mlmt_burnin_steps": Key("int", 0, "MLMT: steps with consistency weight 0 (the code: 10"
                             " epochs)"),
    "mlmt_ramp_steps": Key("int", 0, "MLMT: steps of the linear ramp of the consistency weight"
                           " from 0 to 1 after the burn-in (the code: 50 epochs; 0: 1 at once)"),
}
