"""Run a segmentation model over an evaluation dataset: mIoU under an inference setting
(whole image or sliding window, multi-scale + flip), a missing or perturbed modality, colour
overlays."""

import functools
import os

import keras
import tensorflow as tf

from ssma_tf.errors import ConfigError, InputError

# main_logits, multiscale_probabilities, padded_probabilities and parse_scales are
# re-exported here for export/serving.py, training/summaries.py, the scripts and the tests.
from ssma_tf.evaluation.inference import (  # noqa: F401
    Inference,
    main_logits,
    multiscale_probabilities,
    padded_probabilities,
    parse_scales,
    probabilities,
)
from ssma_tf.evaluation.metrics import ConfusionMatrix
from ssma_tf.visualization import default_palette, display_image, write_overlays


def check_modality(names, name):
    """InputError unless `name` is one of the model's input modalities `names`."""
    if name not in names:
        raise InputError(f"--missing-modality {name!r}: the model inputs are {sorted(names)}")


def drop_modality(inputs, name):
    """The inputs with modality `name` replaced by zeros (the contract's "missing" value)."""
    check_modality(inputs, name)
    return {n: tf.zeros_like(x) if n == name else x for n, x in inputs.items()}


@functools.lru_cache(maxsize=4)
def probability_predictor(model, inference=Inference()):
    """A compiled inputs -> float32 probabilities [B,H,W,C] function (cached: one trace per
    model and `Inference` setting)."""
    return tf.function(lambda inputs: probabilities(model, inputs, inference),
                       reduce_retracing=True)


@functools.lru_cache(maxsize=4)
def label_predictor(model, inference=Inference()):
    """A compiled inputs -> int32 labels [B,H,W] function (cached: one trace per model and
    setting, shared by the full and missing-modality runs)."""

    @tf.function(reduce_retracing=True)
    def predict(inputs):
        return tf.argmax(probabilities(model, inputs, inference), axis=-1, output_type=tf.int32)

    return predict


def evaluate(model, dataset, *, num_classes, ignore_label=255, missing_modality=None,
             scales=(1.0,), flip=False, inference=None, perturb=None, overlays_dir=None,
             num_overlays=0, palette=None, class_names=None, miou_rule="standard", specs=None):
    """Scores `model` on `dataset` ((inputs dict, int labels [B,H,W]) batches, single pass).

    `missing_modality`: a modality name or a list of them, fed as zeros. `inference` (an
    `Inference`; default whole image at `scales`, `flip`) says how each batch is predicted;
    `perturb(inputs) -> inputs`, when given, changes each batch's model inputs after the
    missing ones are dropped (robustness protocol). One confusion matrix over the
    whole set; returns a JSON-ready dict (see `ConfusionMatrix.to_dict`) plus the settings
    used, the image count and the overlay paths.
    """
    inference = inference or Inference("whole", tuple(scales), flip)
    cm = ConfusionMatrix(num_classes, ignore_label, miou_rule)
    palette = default_palette(num_classes) if palette is None else palette
    predict = label_predictor(model, inference)
    missing = (missing_modality,) if isinstance(missing_modality, str) else tuple(
        missing_modality or ())
    for name in missing:
        check_modality(dataset.element_spec[0], name)
    num_images = 0
    overlay_paths = []
    for inputs, labels in dataset:
        model_inputs = inputs
        for name in missing:
            model_inputs = drop_modality(model_inputs, name)
        if perturb is not None:
            model_inputs = perturb(model_inputs)
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
    result.update(num_images=num_images,
                  missing_modality=missing[0] if len(missing) == 1 else list(missing) or None,
                  scales=list(inference.scales), flip=inference.flip,
                  inference=inference.to_json(), overlays=overlay_paths)
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
