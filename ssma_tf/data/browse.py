"""Dataset browser: render records as the model sees them (optionally augmented) to PNGs.

Each example becomes one PNG: its modalities side by side (colour/image modalities with
their normalisation undone, depth as a colour map with holes black), then the coloured
label (ignored pixels and padding black).

    python -m ssma_tf.data.browse --records X --out DIR [--num 8] [--augment]
        [--dataset NAME] [--modalities rgb,depth] [--crop H,W] [--seed 0]
"""

import argparse
import os
import sys

import cv2
import numpy as np
import tensorflow as tf

from ssma_tf.cli import guarded
from ssma_tf.data import schema
from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from ssma_tf.data.pipeline import example_dataset, record_error, select_modalities, train_dataset
from ssma_tf.errors import InputError
from ssma_tf.io_utils import make_folder, write_png
from ssma_tf.visualization import colorize, dataset_palette


def render_modality(x, spec):
    """A normalised modality [H, W, C] -> uint8 RGB [H, W, 3] for display; depth (0..depth_max
    after normalisation -> 0..1) as a turbo colour map with holes black."""
    x = np.asarray(x, np.float32)
    if spec.encoding == "raw":
        scaled = np.clip(np.round(x[..., 0] * 255.0), 0, 255).astype(np.uint8)
        coloured = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
        coloured[x[..., 0] <= 0] = 0
        return coloured
    if spec.encoding == "color":
        x = (x * np.asarray(IMAGENET_STD, np.float32)
             + np.asarray(IMAGENET_MEAN, np.float32)) * 255.0
    else:
        x = (x + 1.0) * 127.5
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def first_size(records, modalities):
    """(height, width) of the first example, for a crop that shows it whole at scale 1."""
    for element in example_dataset(records, modalities=modalities[:1]).take(1):
        inputs = element[0] if isinstance(element, tuple) else element
        return tuple(int(d) for d in inputs[modalities[0]].shape[:2])
    raise InputError(f"{records}: no examples")


def browse(records, out, *, num=8, augment=False, dataset=None, modalities=None, crop=None,
           seed=0, depth_max=10.0):
    """Write `<out>/example_NNNN.png` for the first `num` examples; returns the paths."""
    _, info = schema.resolve_records(records)
    modalities = list(modalities or info.modality_names)
    specs = select_modalities(records, info, modalities)
    palette = dataset_palette(dataset, info.num_classes)
    if augment:
        crop = tuple(crop or first_size(records, modalities))
        ds = train_dataset(records, modalities=modalities, batch_size=1, crop=crop,
                           ignore_label=info.ignore_label, seed=seed, labeled=info.labeled,
                           shuffle_buffer=1, depth_max=depth_max, repeat=False)
        ds = ds.unbatch()
    else:
        ds = example_dataset(records, modalities=modalities, depth_max=depth_max)
    make_folder(out)
    paths = []
    try:
        for index, element in enumerate(ds.take(num)):
            paths.append(_write_example(out, index, element, info, specs, palette))
    except tf.errors.DataLossError as exc:
        raise record_error(records, exc) from None
    return paths


def _write_example(out, index, element, info, specs, palette):
    """One example's PNG; returns its path."""
    inputs, label = element if info.labeled else (element, None)
    tiles = [render_modality(inputs[name].numpy(), specs[name]) for name in specs]
    if label is not None:
        tiles.append(colorize(label.numpy(), palette, info.ignore_label))
    path = os.path.join(out, f"example_{index:04d}.png")
    write_png(path, np.concatenate(tiles, axis=1))
    return path


def parse_crop(text):
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop expects H,W, got {text!r}") from None
    return height, width


@guarded
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True, help="record path, shard glob or SSMA file")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=8, help="examples to render")
    parser.add_argument("--augment", action="store_true", help="show training augmentation")
    parser.add_argument("--dataset", help="registered dataset name for the label palette")
    parser.add_argument("--modalities", help="comma-separated subset (default: all)")
    parser.add_argument("--crop", type=parse_crop, help="H,W crop with --augment (default: "
                        "the first image's size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth-max", type=float, default=10.0, help="metres at full colour")
    args = parser.parse_args(argv)
    paths = browse(args.records, args.out, num=args.num, augment=args.augment,
                   dataset=args.dataset, seed=args.seed, crop=args.crop,
                   modalities=args.modalities.split(",") if args.modalities else None,
                   depth_max=args.depth_max)
    print(f"wrote {len(paths)} PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
