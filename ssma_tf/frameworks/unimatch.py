"""UniMatch (Yang, Qi, Feng, Zhang, Shi, CVPR 2023): weak-to-strong consistency with two
strong views and a feature-perturbation stream, one network, no teacher.

Written from the released code's behaviour (LiheYoung/UniMatch) as a description; no code is
taken from it. One step, per replica, labeled rows x (labels y), unlabeled weak views u
(the stream's geometric augmentation; `photometric: false` leaves them unjittered, as the
code):
1. Strong views s1, s2 of u: each colour modality (encoding "color") gets its own draw of
   colour jitter (p `strong_jitter_prob`), grayscale (p `strong_grayscale_prob`) and
   Gaussian blur (p `strong_blur_prob`) (data/photometric.py); other modalities stay as in
   u; crop padding stays zero.
2. CutMix: per view and image, with probability `cutmix_prob`, one box of area
   U(`cutmix_area`) of the crop and aspect U(`cutmix_aspect`), redrawn until it fits. Inside
   box k, row i of s_k takes the pixels (every modality) of s_k's row i-1 (the mix partner),
   and its targets take the partner's: the partner's prediction in inference mode (BN
   running statistics, no gradient) and its padding.
3. Main pass (training mode): encoder features of [x; u]; the decoder runs once on
   [features; channel-dropped features] (Dropout2d `fp_dropout` on every encoder feature:
   frameworks/feature_split.py says where the model is cut), giving the clean predictions
   of x and u and the perturbed ones of u (those of x are computed and dropped, as the code).
4. Strong pass (training mode, its own BN batch): the model on [s1; s2].
5. Targets: argmax and max softmax of u's clean "logits" (without gradient); pixel
   (p, conf) trains when conf >= `pseudo_threshold` and p is not crop padding.
Loss = (L_x + strong_weight (L_s1 + L_s2) + fp_weight L_fp) / 2 (the code: sup 1/2, each
strong view 1/8, FP 1/4). L_x: the supervised loss (every weighted output, `ohem` optional).
Each unsupervised term: per pixel CE times the mask, summed, divided by the number of
non-padding pixels (confident or not) over the global batch, summed over the model's
weighted pixel outputs with their weights; L_s1/L_s2 use the mixed targets and padding, L_fp
the unmixed ones.

Where this differs from the released code:
- The code draws the mix partners from a second pass over the unlabeled loader (the same
  images as u, by its sampler, differently augmented) and runs the extra inference-mode
  forward on them. The trainer gives one unlabeled stream, so the partner of row i is row
  i-1 of the same batch (another image; its own strong view, its own weak prediction in
  inference mode). With one unlabeled image per replica the partner is the image itself.
- L_x is the toolkit's per-image mean over valid pixels (the code: the mean over the batch's
  valid pixels; equal when the images have as many valid pixels), OHEM per image.
- The unsupervised terms are divided by the global count of non-padding pixels (all
  replicas); the code divides per GPU (equal when the GPUs have as many).
- Crop padding may lie on any side (the code pads right / bottom); it is detected as zero in
  every modality of u (losses.padding_pixels), not by a marker in a mask file.
All randomness is stateless, from (seed, step, replica), so a resumed run repeats it.

Logged: loss, supervised_loss, strong1_loss, strong2_loss, fp_loss (unweighted), mask_ratio
(the fraction of u's non-padding pixels at or above the threshold), learning_rate.
"""

import functools

import tensorflow as tf

from ssma_tf.data import photometric, schema
from ssma_tf.data.augment import split_seed
from ssma_tf.data.pipeline import select_modalities
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import cutmix
from ssma_tf.frameworks.common import concat_inputs, num_rows, step_seed
from ssma_tf.frameworks.feature_split import feature_split
from ssma_tf.frameworks.losses import padding_pixels
from ssma_tf.frameworks.supervised import Supervised
from ssma_tf.registry import Key, register_framework

SALT_STRONG = 10          # the strong views' colour draws
SALT_BOXES = 11           # the CutMix boxes
SALT_FP = 12              # the feature dropout masks
MAX_BOX_DRAWS = 100       # rejection draws of a CutMix box before it is clipped to fit


def cutmix_boxes(seed, batch, height, width, *, prob=0.5, area=(0.02, 0.4),
                 aspect=(0.3, 1 / 0.3)):
    """bool [B, H, W]: per image, with probability `prob`, one box of area U(area) * H * W
    and aspect r ~ U(aspect) (width int(sqrt(A / r)), height int(sqrt(A r))) at a uniform
    integer corner, (r, corner) redrawn until the box fits (at most MAX_BOX_DRAWS times, then
    clipped); else no box."""
    present_seed, area_seed, draw_seed = split_seed(seed, 3)
    present = tf.random.stateless_uniform([batch], present_seed) < prob
    size = tf.random.stateless_uniform([batch], area_seed, *area) * tf.cast(height * width,
                                                                              tf.float32)
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)

    def draw(index):
        ratio_seed, y_seed, x_seed = split_seed(
            tf.random.experimental.stateless_fold_in(draw_seed, index), 3)
        ratio = tf.random.stateless_uniform([batch], ratio_seed, *aspect)
        box_w = tf.cast(tf.sqrt(size / ratio), tf.int32)
        box_h = tf.cast(tf.sqrt(size * ratio), tf.int32)
        y = tf.random.stateless_uniform([batch], y_seed, 0, height, dtype=tf.int32)
        x = tf.random.stateless_uniform([batch], x_seed, 0, width, dtype=tf.int32)
        return tf.stack([y, x, box_h, box_w], axis=1)

    def fits(box):
        return (box[:, 0] + box[:, 2] <= height) & (box[:, 1] + box[:, 3] <= width)

    def body(index, box):
        fresh = draw(index)
        return index + 1, tf.where(fits(box)[:, None], box, fresh)

    _, box = tf.while_loop(lambda i, b: (i < MAX_BOX_DRAWS) & ~tf.reduce_all(fits(b)), body,
                           (tf.constant(1), draw(0)))
    return box_mask(box, height, width) & present[:, None, None]


def box_mask(box, height, width):
    """bool [B, H, W]: True on rows y..y+h-1 and columns x..x+w-1 of box (y, x, h, w) [B, 4]."""
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    y, x, h, w = (box[:, i, None, None] for i in range(4))
    return (rows >= y) & (rows < y + h) & (cols >= x) & (cols < x + w)


def paste(own, partner, box):
    """Row i of `own` with the pixels inside its box taken from row i-1 of `partner` (a
    roll along the batch). own / partner: [B, H, W] or [B, H, W, C]; box: bool [B, H, W].
    `cutmix.cutmix(t, box)` is `paste(t, t, box)`; the targets inside a box come from the
    partner's other prediction (inference mode), hence two tensors."""
    if own.shape.rank == 4:
        box = box[..., None]
    return tf.where(box, tf.roll(partner, shift=1, axis=0), own)


def channel_dropout(feature, seed, rate):
    """Dropout2d: each channel of each image zeroed with probability `rate`, the others
    scaled by 1 / (1 - rate); tensors that are not [B, H, W, C] pass unchanged."""
    if feature.shape.rank != 4 or rate <= 0:
        return feature
    shape = tf.stack([tf.shape(feature)[0], 1, 1, tf.shape(feature)[3]])
    keep = tf.random.stateless_uniform(shape, seed) >= rate
    return feature * tf.cast(keep, feature.dtype) / tf.cast(1.0 - rate, feature.dtype)


def pseudo_labels(logits):
    """(argmax int32 [B, H, W], max softmax float32 [B, H, W]) of `logits`, no gradient."""
    logits = tf.stop_gradient(tf.cast(logits, tf.float32))
    return (tf.argmax(logits, axis=-1, output_type=tf.int32),
            tf.reduce_max(tf.nn.softmax(logits), axis=-1))


def global_sum(value):
    """`value` summed over the replicas (itself outside a distributed step)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def consistency_loss(outputs, weights, labels, confidence, padding, threshold):
    """sum_k w_k * sum over pixels of CE(outputs[k], labels) * [conf >= threshold and not
    padding], divided by the number of non-padding pixels over all replicas (at least 1)."""
    mask = tf.cast((confidence >= threshold) & ~padding, tf.float32)
    count = global_sum(tf.reduce_sum(tf.cast(~padding, tf.float32)))
    total = 0.0
    for name, weight in weights.items():
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(outputs[name], tf.float32))
        total += weight * tf.reduce_sum(ce * mask)
    return total / tf.maximum(count, 1.0)


def unimatch_total(supervised, strong1, strong2, fp, *, strong_weight, fp_weight):
    """(L_x + strong_weight (L_s1 + L_s2) + fp_weight L_fp) / 2."""
    return 0.5 * (supervised + strong_weight * (strong1 + strong2) + fp_weight * fp)


def _rows(outputs, start, stop=None):
    return {name: value[start:stop] for name, value in outputs.items()}


class UniMatch(Supervised):
    """One network and its optimizer, as supervised; see the module docstring for the step."""

    uses_unlabeled = True

    @functools.cached_property
    def split(self):
        """The model's FeatureSplit (ConfigError naming the model when it has none)."""
        return feature_split(self.model, self.config.model)

    @functools.cached_property
    def colour_modalities(self):
        """The modalities of the unlabeled records with encoding "color" (the strong views'
        photometric ops touch only these)."""
        records = self.config.unlabeled_data or self.config.train_data
        if not records:
            raise ConfigError(f"{self.config.source}: key 'train_data' is needed: unimatch reads"
                              " which modalities are colour from the records")
        _, info = schema.resolve_records(records)
        specs = select_modalities(records, info, self.config.modalities)
        return [name for name, spec in specs.items() if spec.photometric]

    def _seed(self, salt):
        return step_seed(self.config.seed, self.step, salt)

    def strong_view(self, weak, padding, seed):
        """A strong view of the weak inputs: colour modalities photometrically augmented
        (padding kept zero), the others unchanged."""
        config = self.config
        view = dict(weak)
        for index, name in enumerate(self.colour_modalities):
            unit = photometric.strong_colour(
                photometric.unit_rgb(tf.cast(weak[name], tf.float32)),
                tf.random.experimental.stateless_fold_in(seed, index),
                jitter_prob=config.strong_jitter_prob, jitter=tuple(config.strong_jitter),
                grayscale_prob=config.strong_grayscale_prob,
                blur_prob=config.strong_blur_prob, blur_sigma=tuple(config.strong_blur_sigma))
            strong = tf.where(padding[..., None], 0.0, photometric.normalised_rgb(unit))
            view[name] = tf.cast(strong, weak[name].dtype)
        return view

    def boxes(self, seed, weak):
        """The CutMix boxes of one strong view, bool [B, H, W]."""
        first = next(iter(weak.values()))
        config = self.config
        return cutmix_boxes(seed, num_rows(weak), tf.shape(first)[1], tf.shape(first)[2],
                            prob=config.cutmix_prob, area=tuple(config.cutmix_area),
                            aspect=tuple(config.cutmix_aspect))

    def train_step(self, labeled, unlabeled=None):
        config = self.config
        inputs_l, labels = labeled
        weak = unlabeled
        rows_l, rows_u = num_rows(inputs_l), num_rows(weak)
        rows = rows_l + rows_u
        padding = padding_pixels(weak)
        strong_seeds = split_seed(self._seed(SALT_STRONG), 2)
        box_seeds = split_seed(self._seed(SALT_BOXES), 2)
        boxes = [self.boxes(seed, weak) for seed in box_seeds]
        mix_labels, mix_conf = pseudo_labels(self.model(weak, training=False)["logits"])
        strong = []
        for seed, box in zip(strong_seeds, boxes):
            view = self.strong_view(weak, padding, seed)
            strong.append({name: cutmix.cutmix(value, box) for name, value in view.items()})
        batch = concat_inputs(inputs_l, weak)
        weights = self.pixel_loss_weights
        with tf.GradientTape() as tape:
            features = self.split.encode(batch, training=True)
            dropped = [channel_dropout(f, tf.random.experimental.stateless_fold_in(
                self._seed(SALT_FP), i), config.fp_dropout) for i, f in enumerate(features)]
            outputs = self.split.decode([tf.concat([f, d], 0) for f, d in zip(features, dropped)],
                                        concat_inputs(batch, batch), training=True)
            clean, fp_out = _rows(outputs, 0, rows), _rows(outputs, rows + rows_l)
            strong_out = self.model(concat_inputs(*strong), training=True)
            supervised = self.supervised_loss(labels, _rows(clean, 0, rows_l))
            labels_u, conf_u = pseudo_labels(clean["logits"][rows_l:])
            strong_losses = []
            for k, box in enumerate(boxes):
                strong_losses.append(consistency_loss(
                    _rows(strong_out, k * rows_u, (k + 1) * rows_u), weights,
                    paste(labels_u, mix_labels, box), paste(conf_u, mix_conf, box),
                    cutmix.cutmix(padding, box), config.pseudo_threshold))
            fp = consistency_loss(fp_out, weights, labels_u, conf_u, padding,
                                  config.pseudo_threshold)
            loss = unimatch_total(supervised, *strong_losses, fp,
                                  strong_weight=config.strong_weight, fp_weight=config.fp_weight)
            loss += self.penalty_loss(self.model, clean,
                                      self.global_batch_size + self.global_unlabeled_batch_size)
        self.optimizer.apply(tape, loss)
        valid = tf.cast(~padding, tf.float32)
        confident = tf.reduce_sum(tf.cast(conf_u >= config.pseudo_threshold, tf.float32) * valid)
        return {"loss": loss, "supervised_loss": supervised, "strong1_loss": strong_losses[0],
                "strong2_loss": strong_losses[1], "fp_loss": fp,
                "mask_ratio": confident / tf.maximum(tf.reduce_sum(valid), 1.0),
                "learning_rate": self.optimizer.learning_rate()}


KEYS = {
    "pseudo_threshold": Key("float", 0.95, "a pixel trains on its pseudo label when the weak"
                            " view's top softmax probability is at least this (UniMatch: 0.95"
                            " VOC / COCO, 0 Cityscapes)", bounds=(0, 1)),
    "strong_weight": Key("float", 0.25, "weight of each strong view's loss inside the halved"
                         " sum (UniMatch: 0.25)"),
    "fp_weight": Key("float", 0.5, "weight of the feature-perturbation loss inside the halved"
                     " sum (UniMatch: 0.5)"),
    "fp_dropout": Key("float", 0.5, "channel dropout rate on the encoder features of the"
                      " perturbed stream (UniMatch: 0.5)", bounds=(0, 0.99)),
    "cutmix_prob": Key("float", 0.5, "probability of a CutMix box per strong view and image",
                       bounds=(0, 1)),
    "cutmix_area": Key("list", [0.02, 0.4], "CutMix box area range, fractions of the crop"),
    "cutmix_aspect": Key("list", [0.3, 1 / 0.3], "CutMix box aspect (height / width) range"),
    "strong_jitter_prob": Key("float", 0.8, "probability of colour jitter in a strong view",
                              bounds=(0, 1)),
    "strong_jitter": Key("list", [0.5, 0.5, 0.5, 0.25], "colour jitter strengths: brightness,"
                         " contrast, saturation (factors U[1-s, 1+s]) and hue (shift"
                         " U[-h, h] of the circle)"),
    "strong_grayscale_prob": Key("float", 0.2, "probability of grayscale in a strong view",
                                 bounds=(0, 1)),
    "strong_blur_prob": Key("float", 0.5, "probability of Gaussian blur in a strong view",
                            bounds=(0, 1)),
    "strong_blur_sigma": Key("list", [0.1, 2.0], "Gaussian blur sigma range (pixels)"),
}
register_framework("unimatch", UniMatch, keys=KEYS)
