"""Colour label maps with a dataset palette, blend them over the camera image, write PNGs.

Used by evaluation (overlays), training (TensorBoard images), the dataset browser and
predict.py; `write_png` (ssma_tf.io_utils) is re-exported for them.
"""

import numpy as np

from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.io_utils import write_png

__all__ = ["blend", "colorize", "dataset_labels", "dataset_palette", "default_palette",
           "display_image", "write_overlays", "write_png"]


def default_palette(num_classes):
    """The Pascal VOC bit-interleaved palette: distinct colours for any class count."""
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def dataset_labels(dataset, num_classes=None):
    """(class names, palette) of the dataset registered as `dataset` (ssma_tf.datasets), for
    `num_classes` classes; generic names ("class_<c>") and default_palette without a dataset.

    An unknown dataset name raises the registry's InputError (listing the known names). With
    `num_classes`, names the dataset lacks stay generic, and a dataset palette shorter than
    `num_classes` is replaced by default_palette(num_classes); without it, the dataset's own
    names and palette are returned (default_palette(256) when there is no dataset).
    """
    if not dataset:
        count = 256 if num_classes is None else max(num_classes, 1)
        return [f"class_{c}" for c in range(count)], default_palette(count)
    definition = get_dataset(dataset)
    palette = np.asarray(definition.palette, np.uint8)
    if num_classes is None:
        return list(definition.class_names), palette
    names = [f"class_{c}" for c in range(num_classes)]
    names[:len(definition.class_names)] = list(definition.class_names)[:num_classes]
    if len(palette) < num_classes:
        palette = default_palette(num_classes)
    return names, palette


def dataset_palette(dataset, num_classes=None):
    """The palette half of dataset_labels (same rules, same errors)."""
    return dataset_labels(dataset, num_classes)[1]


def colorize(labels, palette, ignore_label=255):
    """[H, W] integer labels -> [H, W, 3] uint8 RGB; ignored or unknown labels are black."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, np.uint8)
    known = (labels >= 0) & (labels < len(palette)) & (labels != ignore_label)
    colour = np.zeros(labels.shape + (3,), np.uint8)
    colour[known] = palette[labels[known]]
    return colour


def display_image(inputs, specs=None):
    """A uint8 RGB background from normalised model inputs ({name: [H, W, C]} numpy).

    Prefers `rgb` (else the first modality) and undoes its normalisation: ImageNet for colour
    images (encoding "color", or the name "rgb" when no specs are given), x/127.5 - 1 for other
    3-channel images; a 1-channel input (depth) is shown as grey scaled to its maximum.
    """
    name = "rgb" if "rgb" in inputs else next(iter(inputs))
    x = np.asarray(inputs[name], np.float32)
    encoding = specs[name].encoding if specs and name in specs else (
        "color" if name == "rgb" else "image")
    if x.shape[-1] == 1:
        peak = float(x.max())
        x = np.repeat(x / peak if peak > 0 else x, 3, axis=-1)
    elif encoding == "color":
        x = x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    else:
        x = (x + 1.0) / 2.0
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def blend(image, colour, alpha=0.5):
    """`alpha` * colour + (1 - alpha) * image, both [H, W, 3] uint8 RGB."""
    mixed = alpha * colour.astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def write_overlays(prefix, image, prediction, palette, *, labels=None, ignore_label=255,
                   alpha=0.5):
    """Writes `<prefix>_pred.png` (and `<prefix>_gt.png` when labels are given) blended over
    `image` (uint8 RGB); returns the written paths."""
    paths = [f"{prefix}_pred.png"]
    write_png(paths[0], blend(image, colorize(prediction, palette, ignore_label), alpha))
    if labels is not None:
        paths.append(f"{prefix}_gt.png")
        write_png(paths[1], blend(image, colorize(labels, palette, ignore_label), alpha))
    return paths
