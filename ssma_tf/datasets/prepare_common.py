"""Shared preparer plumbing: image I/O with clear errors, list writing, the --root/--out CLI."""

import argparse
import os

import cv2
import numpy as np

from ssma_tf.cli import guarded
from ssma_tf.errors import InputError
from ssma_tf.io_utils import atomic_write, write_png  # noqa: F401 (re-exported for the preparers)


def read_image(path, flags=cv2.IMREAD_UNCHANGED):
    """cv2.imread that raises InputError naming the file; colour images come back RGB."""
    image = cv2.imread(str(path), flags)
    if image is None:
        raise InputError(f"{path}: cannot read image")
    if image.ndim == 3 and image.shape[2] >= 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    return image


def write_list(path, rows, relative_to=None):
    """Write rows of file paths as a list file, paths relative to `relative_to` (default: the
    list's own folder); columns are tab-separated when a path contains whitespace."""
    folder = os.path.abspath(relative_to or os.path.dirname(os.path.abspath(path)))
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        short = next(row for row in rows if len(row) == min(widths))
        raise InputError(f"{path}: samples have {sorted(widths)} columns; e.g. {short[0]} has "
                         f"{len(short)} (a label or modality file is missing)")
    with atomic_write(str(path)) as handle:
        for row in rows:
            rel = [os.path.relpath(os.path.abspath(p), folder) for p in row]
            sep = "\t" if any(any(ch.isspace() for ch in r) for r in rel) else " "
            handle.write(sep.join(rel) + "\n")
    return str(path)


def require_dir(path, what):
    if not os.path.isdir(path):
        raise InputError(f"{path}: {what} folder not found")
    return path


def sorted_files(folder, suffix=""):
    """Files in `folder` whose names end with `suffix`, sorted; InputError if the folder is
    missing."""
    require_dir(folder, "expected")
    return sorted(f for f in os.listdir(folder) if f.endswith(suffix)
                  and os.path.isfile(os.path.join(folder, f)))


def resize_to(image, shape, nearest):
    """Resize to (H, W) when needed: nearest for labels, area for images."""
    if image.shape[:2] == tuple(shape):
        return image
    flag = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, (shape[1], shape[0]), interpolation=flag)


def lut(image, table):
    """Apply a uint8[256] raw -> train id table."""
    return np.asarray(table, np.uint8)[image]


def cli(prepare, description, argv=None, add_arguments=None):
    """Run `prepare(root, out, **extra)` from --root/--out (+ extra flags), ending as every
    tool does (ssma_tf/cli.py: InputError -> `error:` and exit 2)."""
    @guarded
    def main(argv):
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--root", required=True, help="the dataset as downloaded")
        parser.add_argument("--out", required=True,
                            help="folder for list files and converted PNGs")
        if add_arguments:
            add_arguments(parser)
        args = vars(parser.parse_args(argv))
        lists = prepare(args.pop("root"), args.pop("out"), **args)
        for split, path in lists.items():
            print(f"{split}: {path}")
        return 0
    return main(argv)
