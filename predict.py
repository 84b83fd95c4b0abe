"""Segment images with a trained model: python predict.py --config run.config
--input (FOLDER | LIST.txt | IMAGE) [--depth (FOLDER | IMAGE)] --output DIR

Input forms (the first config modality, usually rgb, comes from --input):
- an image file, with the other modalities given as files (--depth FILE, --modality NAME=FILE);
- a folder of images, the other modalities as folders holding files with the same stems;
- a list file (.txt): one sample per line, one column per config modality in order, exactly
  as the converter's list files; a trailing label column is allowed and ignored.
For each sample writes `<stem>_labels.png` (uint8 train ids), `<stem>_color.png` (dataset
palette) and `<stem>_overlay.png` (colours blended over the RGB image). Raw depth files are
16-bit PNGs in stored units (millimetres by default); `--missing-modality NAME` feeds zeros.
`--mode slide --crop N[,W] [--stride N[,W]]` predicts in sliding windows (ssma_tf.api does
the work: `Segmenter`).
"""

import argparse
import os
import sys

from ssma_tf.cli import guarded
from ssma_tf.errors import InputError
from ssma_tf.evaluation.inference import add_arguments

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LIST_EXTENSIONS = (".txt", ".lst", ".list")


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", required=True, help="flat key: value YAML config")
    parser.add_argument("--input", required=True, help="image, folder or list file")
    parser.add_argument("--depth", help="depth image or folder (the 'depth' modality)")
    parser.add_argument("--modality", action="append", default=[],
                        help="NAME=PATH for another modality (image or folder; repeatable)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--checkpoint", help="checkpoint folder or prefix (default: config)")
    parser.add_argument("--missing-modality", help="modality fed as zeros (sensor missing)")
    parser.add_argument("--scales", help="comma-separated scales (default: config eval_scales)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="add flipped predictions (default: config eval_flip)")
    add_arguments(parser)
    parser.add_argument("--override", action="append", default=[], help="key=value (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --output to be the --input folder (its files may be replaced)")
    parser.add_argument("--allow-8bit-depth", action="store_true",
                        help="accept 8-bit or JPEG images as raw depth (normally refused)")
    return parser


def _other_paths(args, modalities):
    """{modality: path} from --depth and --modality NAME=PATH."""
    paths = {}
    for text in args.modality:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--modality {text!r}: expected NAME=PATH")
        paths[name] = path
    if args.depth:
        paths["depth"] = args.depth
    unknown = sorted(set(paths) - set(modalities[1:]))
    if unknown:
        raise InputError(f"--depth/--modality {unknown[0]!r}: the model's other modalities are "
                         f"{modalities[1:]}")
    return paths


def _folder_images(folder):
    return {os.path.splitext(n)[0]: os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if n.lower().endswith(IMAGE_EXTENSIONS)}


def collect_samples(args, modalities, needed):
    """[(stem, {modality: path})] for the --input form; `needed` = modalities to read."""
    from ssma_tf.data.listfile import read_list

    source = args.input
    others = _other_paths(args, modalities)
    first = modalities[0]
    if os.path.isfile(source) and source.lower().endswith(LIST_EXTENSIONS):
        try:
            entries = read_list(source, list(modalities))
        except InputError as error:
            try:
                entries = read_list(source, list(modalities) + ["label"])
            except InputError:
                raise error from None
        return [(os.path.splitext(os.path.basename(e.paths[0]))[0],
                 {n: p for n, p in zip(modalities, e.paths) if n in needed}) for e in entries]
    missing = [n for n in needed if n != first and n not in others]
    if missing:
        raise InputError(f"--input {source}: modality {missing[0]!r} is needed too "
                         f"(--depth / --modality {missing[0]}=PATH, or --missing-modality)")
    if os.path.isdir(source):
        firsts = _folder_images(source)
        if not firsts:
            raise InputError(f"--input {source}: folder holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        folders = {}
        for name in needed:
            if name == first:
                continue
            if not os.path.isdir(others[name]):
                raise InputError(f"{others[name]}: --input is a folder, so {name} must be one too")
            folders[name] = _folder_images(others[name])
        samples = []
        for stem, path in firsts.items():
            paths = {first: path}
            for name, images in folders.items():
                if stem not in images:
                    raise InputError(f"{others[name]}: no {name} image named {stem}.* to go "
                                     f"with {path}")
                paths[name] = images[stem]
            samples.append((stem, paths))
        return samples
    if not os.path.isfile(source):
        raise InputError(f"--input {source}: no such image, folder or list file")
    paths = {first: source}
    paths.update({n: others[n] for n in needed if n != first})
    return [(os.path.splitext(os.path.basename(source))[0], paths)]


def check_output(args):
    """InputError when --output is the --input folder (or holds the --input file), unless
    --overwrite."""
    source = os.path.abspath(args.input)
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    if os.path.abspath(args.output) == folder and not args.overwrite:
        raise InputError(f"--output {args.output} is the input folder: predictions could "
                         f"replace input images; choose another folder or pass --overwrite")


@guarded
def main(argv=None):
    args = _parser().parse_args(argv)
    count = run_prediction(args)
    print(f"{count} predictions written to {args.output}")
    return 0


def run_prediction(args):
    """Predicts every sample of `args.input`; returns the number written."""
    from ssma_tf.api import Segmenter, write_predictions
    from ssma_tf.evaluation.evaluator import check_modality
    from ssma_tf.evaluation.inference import settings_from_args
    from ssma_tf.runs import load_eval_config

    config = load_eval_config(args.config, args.override)
    check_output(args)
    modalities = list(config.modalities)
    if args.missing_modality:
        check_modality(modalities, args.missing_modality)
    needed = [n for n in modalities if n != args.missing_modality]
    samples = collect_samples(args, modalities, needed)
    segmenter = Segmenter.from_config(config, args.checkpoint, **settings_from_args(args))
    return write_predictions(segmenter, samples, args.output, args.input,
                             allow_8bit_depth=args.allow_8bit_depth)


if __name__ == "__main__":
    sys.exit(main())
