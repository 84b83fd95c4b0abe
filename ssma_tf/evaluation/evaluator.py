"""Run a segmentation model over an evaluation dataset: mIoU, multi-scale + flip, a missing
modality, colour overlays."""

import functools
import os

import keras
import tensorflow as tf

from ssma_tf.errors import ConfigError, InputError
from ssma_tf.evaluation.metrics import ConfusionMatrix
from ssma_tf.visualization import default_palette, display_image, write_overlays

PAD_MULTIPLE = 32


def parse_scales(text):
    """"0.75,1,1.25" -> [0.75, 1.0, 1.25]; InputError naming --scales otherwise."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--scales: expected comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise InputError(f"--scales: expected positive numbers, got {text!r}")
    return scales


def main_logits(outputs):
    """The `logits` entry of a model's dict output (or the output itself)."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def padded_probabilities(model, inputs, multiple=PAD_MULTIPLE):
    """softmax(model(inputs)["logits"]) with H, W zero-padded (bottom/right) up to a multiple
    of `multiple` and cropped back, so any input size works. Zero is the "no data" value."""
    first = next(iter(inputs.values()))
    height, width = tf.shape(first)[1], tf.shape(first)[2]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    padded = {
        name: tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]) for name, x in inputs.items()
    }
    logits = main_logits(model(padded, training=False))
    return tf.nn.softmax(tf.cast(logits[:, :height, :width, :], tf.float32), axis=-1)


def _resize_inputs(inputs, size):
    """Bilinear for multi-channel images, nearest for 1-channel (depth: keeps holes at 0)."""
    return {
        name: tf.image.resize(
            x, size, method="nearest" if x.shape[-1] == 1 else "bilinear"
        )
        for name, x in inputs.items()
    }


def multiscale_probabilities(model, inputs, scales=(1.0,), flip=False):
    """Softmax averaged over `scales` (and horizontal flips), resized back to the input size."""
    first = next(iter(inputs.values()))
    size = tf.shape(first)[1:3]
    total = 0.0
    count = 0
    for scale in scales:
        scaled_size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
        scaled = inputs if scale == 1.0 else _resize_inputs(inputs, scaled_size)
        views = [(scaled, False)]
        if flip:
            views.append(({n: tf.reverse(x, axis=[2]) for n, x in scaled.items()}, True))
        for view, flipped in views:
            probs = padded_probabilities(model, view)
            if flipped:
                probs = tf.reverse(probs, axis=[2])
            if scale != 1.0:
                probs = tf.image.resize(probs, size, method="bilinear")
            total += probs
            count += 1
    return total / count


def check_modality(names, name):
    """InputError unless `name` is one of the model's input modalities `names`."""
    if name not in names:
        raise InputError(f"--missing-modality {name!r}: the model inputs are {sorted(names)}")


def drop_modality(inputs, name):
    """The inputs with modality `name` replaced by zeros (the contract's "missing" value)."""
    check_modality(inputs, name)
    return {n: tf.zeros_like(x) if n == name else x for n, x in inputs.items()}


@functools.lru_cache(maxsize=4)
def label_predictor(model, scales=(1.0,), flip=False):
    """A compiled inputs -> int32 labels [B,H,W] function (cached: one trace per model and
    setting, shared by the full and missing-modality runs)."""

    @tf.function(reduce_retracing=True)
    def predict(inputs):
        probabilities = multiscale_probabilities(model, inputs, scales, flip)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    return predict


def evaluate(model, dataset, *, num_classes, ignore_label=255, missing_modality=None,
             scales=(1.0,), flip=False, overlays_dir=None, num_overlays=0, palette=None,
             class_names=None, miou_rule="standard", specs=None):
    """Scores `model` on `dataset` ((inputs dict, int labels [B,H,W]) batches, single pass).

    One confusion matrix over the whole set; returns a JSON-ready dict (see
    `ConfusionMatrix.to_dict`) plus the settings used, the image count and the overlay paths.
    """
    scales = tuple(float(s) for s in scales)
    cm = ConfusionMatrix(num_classes, ignore_label, miou_rule)
    palette = default_palette(num_classes) if palette is None else palette
    predict = label_predictor(model, scales, flip)
    if missing_modality:
        check_modality(dataset.element_spec[0], missing_modality)
    num_images = 0
    overlay_paths = []
    for inputs, labels in dataset:
        model_inputs = drop_modality(inputs, missing_modality) if missing_modality else inputs
        predictions = predict(model_inputs)
        cm.update(labels, predictions)
        if overlays_dir and num_images < num_overlays:
            overlay_paths += _write_batch_overlays(
                overlays_dir, num_images, num_overlays, inputs, labels, predictions,
                palette, ignore_label, specs)
        num_images += int(tf.shape(labels)[0])
    if num_images == 0:
        raise InputError("the evaluation dataset is empty")
    result = cm.to_dict(class_names)
    result.update(num_images=num_images, missing_modality=missing_modality,
                  scales=list(scales), flip=bool(flip), overlays=overlay_paths)
    return result


def _write_batch_overlays(folder, first_index, limit, inputs, labels, predictions, palette,
                          ignore_label, specs):
    paths = []
    inputs = {name: x.numpy() for name, x in inputs.items()}
    labels, predictions = labels.numpy(), predictions.numpy()
    for i in range(min(len(labels), limit - first_index)):
        background = display_image({n: x[i] for n, x in inputs.items()}, specs)
        prefix = os.path.join(folder, f"{first_index + i:05d}")
        paths += write_overlays(prefix, background, predictions[i], palette,
                                labels=labels[i], ignore_label=ignore_label)
    return paths


def select_output(model, config):
    """`model` whose "logits" is its output `config.eval_output` (e.g. LinearFusion's
    "logits_depth"); the model itself for the default "logits". ConfigError naming the key
    and the outputs the model has otherwise."""
    key = config.eval_output
    if key == "logits":
        return model
    outputs = model.output if isinstance(model.output, dict) else {"logits": model.output}
    if key not in outputs:
        raise ConfigError(f"{config.source}: key 'eval_output': the {config.model} model has "
                          f"no output {key!r} (it has {', '.join(sorted(outputs))})")
    return keras.Model(model.input, {"logits": outputs[key]}, name=f"{model.name}_{key}")
