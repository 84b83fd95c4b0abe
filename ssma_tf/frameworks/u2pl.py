"""U2PL (Wang et al., CVPR 2022): pseudo labels from an EMA teacher, its unreliable pixels
used as negatives of a per-class contrastive loss.

Written from the released code's behaviour (Haochen-Wang409/U2PL at ab3d2be) as a
description; no code is taken from it. A mean teacher (frameworks/mean_teacher.py: the EMA,
the first-step copy, the supervised loss, the `Rows` hooks) with its own batch preparation
and loss terms. One step (L labeled, U unlabeled rows; t = progress through the run, from
the global step, in whole epochs with `epoch_steps`):
1. pseudo labels y_u = argmax teacher(x_u) (inference mode, `teacher_train_mode` false as
   the code's teacher.eval(); crop padding unlabeled);
2. CutMix (`cutmix`, with probability `cutmix_prob` per batch): per row one box of
   half the image (width uniform in (W/2, W), height = area / width, placed uniformly);
   inside it the row takes row i+1's pixels (every modality) and pseudo label;
3. the student runs on X = [x_l ; mixed x_u] ("logits" and the representation "rep"), and
   the teacher again on X in training mode (batch statistics, as the code), giving the
   entropy H of its softmax, its probabilities and its "rep";
4. supervised loss on the labeled rows (as every framework);
5. unsupervised loss: the unlabeled pixels with H at or above the (100 - a_u)-th percentile
   of the valid ones (a_u = unreliable_percent (1 - t)) are dropped; CE over the kept
   pixels, times the code's B.H.W / #kept (per replica; averaged over replicas);
6. contrastive loss (u2pl_contrast.contrastive_loss) at the representation's resolution
   (labels, masks and teacher probabilities subsampled by nearest neighbour): reliable
   pixels have entropy <= the a_c-th percentile, unreliable ones >= the (100 - a_c)-th
   (a_c = low_entropy_percent (1 - t)); every valid labeled pixel is both; weight
   `contrast_weight`, averaged over replicas;
7. the student steps, then the teacher's EMA (decay min(1 - 1/(t'+1), ema_decay), t' the
   steps since sup_only_steps).

Representation head (U2PL's `rep` branch), added by this framework to the model it builds
(student and teacher): on the model's "decoder" feature (`feature_decoder`: DeepLab-v3+'s
decoder_conv2, AdapNet++'s dec2_conv2, Segformer's fused MLP, LinearFusion's and
TokenFusion's fused MLP maps weighted as their ensemble, SSMA's expert's), ReLU ->
3x3 conv rep_channels -> BN -> ReLU -> 1x1 conv rep_dim. The code's head is a second copy of
the classifier's two conv stacks on the decoder input; here it shares them. The loss uses
cosine similarity (the features are L2-normalised inside it, not in the head).

Where this differs from the released code:
- The pseudo labels go through `pseudo_targets` (so `pseudo_threshold`, `pseudo_balance`
  apply; both off by default as the code).
- The teacher's probabilities for the contrastive loss are its full-size softmax
  subsampled (the code: the softmax of its stride-4 logits).
- alpha's schedule runs on steps (`epoch_steps` gives the code's per-epoch staircase); the
  supervised-only phase is `sup_only_steps` (the code's sup_only_epoch 1 = one epoch of steps,
  set by the configs).
- The teacher's BatchNorm statistics are copied from the student each step (the mean teacher
  family's rule); the code keeps the teacher's own, moved by its train-mode forwards.
- The memory bank is a fixed-capacity ring buffer per class (the code: a growing tensor cut
  to the capacity), the same latest keys; sampling draws among the filled rows.
- Not under `xla: true` (masks of data-dependent size).
- `contrast_mode: paper` fixes the code's empty labeled negatives, its label-equals-class
  condition on unlabeled negatives and its class-index mix-up (see u2pl_contrast).
- Multimodal models: CutMix mixes every modality; the colour jitter of the pipeline
  (`photometric`) touches colour modalities only (the code has none: U2PL's configs set
  photometric false).
"""

from typing import NamedTuple

import keras
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import u2pl_contrast
from ssma_tf.frameworks.common import concat_inputs, num_rows, step_seed
from ssma_tf.frameworks.losses import valid_mask
from ssma_tf.frameworks.mean_teacher import KEYS as MEAN_TEACHER_KEYS
from ssma_tf.frameworks.mean_teacher import MeanTeacher
from ssma_tf.models.factory import MODEL_ATTRIBUTES
from ssma_tf.models.layers import batch_norm, conv
from ssma_tf.registry import Key, register_framework

SALT_U2PL_CUTMIX = 10     # U2PL's CutMix boxes and its per-batch coin
SALT_CONTRAST = 11        # anchor and negative draws


class UnlabeledTargets(NamedTuple):
    """The targets of every row: labels (truth on labeled rows, mixed pseudo labels on the
    unlabeled ones) and the train-mode teacher's entropy on the student batch."""
    labels: object
    entropy: object


def add_representation_head(model, channels, dim):
    """`model` (with a "feature_decoder" output) plus the output "rep" [B, h, w, dim]:
    ReLU -> 3x3 conv -> BN -> ReLU -> 1x1 conv (with bias) on the feature."""
    feature = keras.layers.ReLU(name="rep_input_relu")(model.output["feature_decoder"])
    x = conv(feature, channels, 3, name="rep_conv1")
    x = keras.layers.ReLU(name="rep_relu1")(batch_norm(name="rep_conv1_bn")(x))
    rep = conv(x, dim, 1, use_bias=True, name="rep_conv2")
    wrapped = keras.Model(model.input, {**model.output, "rep": rep}, name=model.name)
    for attribute in MODEL_ATTRIBUTES:
        if hasattr(model, attribute):
            setattr(wrapped, attribute, getattr(model, attribute))
    return wrapped


def half_box_masks(seed, batch_size, height, width):
    """bool [B, H, W]: per row one box of area H.W/2, width uniform in [W//2 + 1, W),
    height round(area / width), corner uniform inside the image (U2PL's CutMix box)."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    low = tf.floor(w / 2.0 + 1.0)
    box_w = tf.floor(low + tf.random.stateless_uniform([batch_size], seeds[0]) * (w - low))
    box_h = tf.round(h * w / 2.0 / box_w)
    left = tf.floor(tf.random.stateless_uniform([batch_size], seeds[1]) * (w - box_w + 1.0))
    top = tf.floor(tf.random.stateless_uniform([batch_size], seeds[2]) * (h - box_h + 1.0))
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    return ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None]))


def mix_with_next(tensor, mask):
    """Row i takes row (i + 1) mod B where `mask` [B, H, W] is True ([B,H,W] or [B,H,W,C])."""
    if tensor.shape.rank == 4:
        mask = mask[..., None]
    return tf.where(mask, tf.roll(tensor, shift=-1, axis=0), tensor)


def nearest_resize(tensor, size):
    """[B, H, W(, C)] -> [B, h, w(, C)] by PyTorch's nearest: source index floor(i H / h)."""
    def index(out, full):
        scale = tf.cast(full, tf.float32) / tf.cast(out, tf.float32)
        return tf.minimum(tf.cast(tf.floor(tf.cast(tf.range(out), tf.float32) * scale),
                                  tf.int32), full - 1)
    shape = tf.shape(tensor)
    tensor = tf.gather(tensor, index(size[0], shape[1]), axis=1)
    return tf.gather(tensor, index(size[1], shape[2]), axis=2)


class U2PL(MeanTeacher):
    """Mean teacher + entropy-filtered pseudo labels + memory-bank contrastive loss."""

    model_features = ("decoder",)

    def make_model(self, **options):
        return add_representation_head(super().make_model(**options),
                                       self.config.rep_channels, self.config.rep_dim)

    def build(self):
        if self.config.pseudo_targets != "logits":
            raise ConfigError(f"{self.config.source}: key 'pseudo_targets': u2pl takes its"
                              " pseudo labels from the teacher's logits only")
        super().build()
        capacities = [self.config.queue_size] * self.config.num_classes
        capacities[0] = self.config.background_queue_size
        self.memory_bank = u2pl_contrast.MemoryBank(capacities, self.config.rep_dim)
        self.contrast = u2pl_contrast.ContrastSettings.from_config(self.config)

    def checkpoint_items(self):
        return {**super().checkpoint_items(), "memory_bank": self.memory_bank}

    # --- schedules ---

    def progress(self):
        """t = (global step, in whole epochs with epoch_steps) / max_iteration."""
        step = tf.cast(self.step, tf.float32)
        if self.config.epoch_steps > 0:
            step = tf.floor(step / self.config.epoch_steps) * self.config.epoch_steps
        return step / float(self.config.max_iteration)

    def percent(self, base):
        """base (1 - t): alpha_t of the entropy split."""
        return base * (1.0 - self.progress())

    # --- the step ---

    def _prepare(self, inputs_l, labels, inputs_u):
        self._copy_student_at_first_step()
        self.count_labels(labels)
        pseudo = self.pseudo_targets(self.teacher_forward(inputs_u), inputs=inputs_u)
        if self.config.cutmix:
            seed = step_seed(self.config.seed, self.step, SALT_U2PL_CUTMIX)
            first = next(iter(inputs_u.values()))
            coin = tf.random.stateless_uniform([], seed) < self.config.cutmix_prob
            mask = coin & half_box_masks(tf.random.experimental.stateless_fold_in(seed, 1),
                                         num_rows(inputs_u), tf.shape(first)[1],
                                         tf.shape(first)[2])
            inputs_u = {name: mix_with_next(value, mask) for name, value in inputs_u.items()}
            pseudo = mix_with_next(pseudo, mask)
        batch = concat_inputs(inputs_l, inputs_u)
        teacher_outputs = self.teacher(batch, training=True)
        probs = tf.nn.softmax(tf.cast(tf.stop_gradient(teacher_outputs["logits"]), tf.float32))
        targets = UnlabeledTargets(tf.concat([tf.cast(labels, tf.int32), pseudo], 0),
                                   u2pl_contrast.entropy(probs))
        return batch, labels, targets, {**teacher_outputs, "probs": probs}

    def consistency_loss(self, targets, outputs, global_batch_size):
        """CE on the unlabeled pixels kept by the entropy drop, times B.H.W / #kept, per
        replica, over every weighted pixel output; this replica's share of the mean over
        replicas (its rows / the global unlabeled rows)."""
        labels = targets.labels
        valid = valid_mask(labels, self.config.num_classes, self.config.ignore_label)
        keep = u2pl_contrast.keep_reliable(targets.entropy, valid,
                                           self.percent(self.config.unreliable_percent))
        kept = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.float32)), 1.0)
        scale = tf.cast(tf.size(labels), tf.float32) / kept
        safe = tf.where(keep, labels, 0)
        total = 0.0
        for name, weight in self.pixel_loss_weights.items():
            pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=safe, logits=tf.cast(outputs[name], tf.float32))
            total += weight * scale * tf.reduce_sum(pixel * tf.cast(keep, tf.float32)) / kept
        share = tf.cast(num_rows(labels), tf.float32) / tf.cast(global_batch_size, tf.float32)
        return total * share

    def extra_losses(self, student_outputs, teacher_outputs, rows):
        """{"contrast_loss": contrast_weight x U2PL's contrastive loss, this replica's share
        of the mean over replicas}; pushes the step's negatives into the memory bank."""
        rep = student_outputs["rep"]
        size = tf.shape(rep)[1:3]
        labels, entropy_map = rows.targets
        sup = rows.supervised
        valid = valid_mask(labels, self.config.num_classes, self.config.ignore_label)
        reliable_u, unreliable_u = u2pl_contrast.reliability_masks(
            entropy_map[sup:], valid[sup:], self.percent(self.config.low_entropy_percent))
        reliable = tf.concat([valid[:sup], reliable_u], 0)
        unreliable = tf.concat([valid[:sup], unreliable_u], 0)
        labeled = tf.range(num_rows(labels))[:, None, None] < sup
        labeled = tf.broadcast_to(labeled, tf.shape(labels))
        labels = tf.where(valid, labels, self.config.num_classes)
        small = [nearest_resize(t, size) for t in (labels, reliable, unreliable, labeled,
                                                   teacher_outputs["probs"])]
        dim = self.config.rep_dim
        flat = [tf.reshape(t, [-1]) for t in small[:4]]
        loss = u2pl_contrast.contrastive_loss(
            tf.reshape(rep, [-1, dim]), tf.reshape(teacher_outputs["rep"], [-1, dim]),
            flat[0], tf.reshape(small[4], [-1, self.config.num_classes]), flat[1], flat[2],
            flat[3], self.memory_bank, self.contrast,
            step_seed(self.config.seed, self.step, SALT_CONTRAST))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return {"contrast_loss": self.config.contrast_weight * loss / replicas}


KEYS = {
    **{k: v for k, v in MEAN_TEACHER_KEYS.items() if k != "consistency"},
    "consistency_weight": Key("float", 1.0, "weight of the unsupervised (pseudo-label) loss"),
    "pseudo_rows": Key("str", "unlabeled", "rows trained on pseudo labels: the unlabeled ones",
                       ("unlabeled",)),
    "cutmix": Key("bool", True, "U2PL's CutMix (one half-image box, partner row i+1) of the"
                  " unlabeled batch and its pseudo labels"),
    "cutmix_prob": Key("float", 0.5, "chance per batch that CutMix is applied (the"
                              " code: 0.5)", bounds=(0, 1)),
    "teacher_train_mode": Key("bool", False, "the pseudo-label forward of the teacher uses"
                              " batch statistics (the code: eval mode); its second forward, on"
                              " the student batch, always does"),
    "unreliable_percent": Key("float", 20.0, "the unsupervised loss drops this % of the"
                              " pixels, the highest entropy, times (1 - t) (the code's 100 -"
                              " drop_percent 80)", bounds=(0, 100)),
    "low_entropy_percent": Key("float", 20.0, "the contrastive loss's reliable / unreliable"
                               " pixels: the lowest / highest this % by entropy, times (1 - t)"
                               " (the code's low_entropy_threshold)", bounds=(0, 50)),
    "epoch_steps": Key("int", 0, "steps per epoch: t of the (1 - t) schedules moves once per"
                       " epoch, as the code (0: every step)"),
    "contrast_weight": Key("float", 1.0, "weight of the contrastive loss"),
    "contrast_mode": Key("str", "code", "code: the released code's negatives and class"
                         " indexing; paper: negatives are pixels probably not of the class and"
                         " each class uses its own anchors (see u2pl_contrast)",
                         u2pl_contrast.CONTRAST_MODES),
    "rep_channels": Key("int", 256, "channels of the representation head's 3x3 conv"),
    "rep_dim": Key("int", 256, "representation (contrastive feature) size"),
    "num_queries": Key("int", 256, "anchors sampled per class"),
    "num_negatives": Key("int", 50, "negatives per anchor, sampled from the class's queue"),
    "temperature": Key("float", 0.5, "InfoNCE temperature"),
    "anchor_threshold": Key("float", 0.3, "anchors need teacher probability of their class"
                            " above this (the code's current_class_threshold)"),
    "negative_threshold": Key("float", 1.0, "negatives need teacher probability of the class"
                              " below this (current_class_negative_threshold: 1, always)"),
    "low_rank": Key("int", 3, "unlabeled negatives of class c: c ranks in [low_rank,"
                    " high_rank) of the teacher's probabilities (2-class data: use 1)"),
    "high_rank": Key("int", 20, "see low_rank"),
    "queue_size": Key("int", 30000, "memory-bank capacity per class (the code; the paper's"
                      " older version 10000)"),
    "background_queue_size": Key("int", 50000, "memory-bank capacity of class 0 (the code;"
                                 " older version 30000)"),
}
register_framework("u2pl", U2PL, keys=KEYS)
