"""Freiburg Forest -> list files `rgb <modality> label`; colour ground truth -> ids 0..5 (0 void).

Layout: <root>/{train,test}/rgb/<key>_Clipped.jpg, <modality>/<key>*.png (default depth_gray;
evi_gray, evi_color, nir_color, ... work too), GT_color/<key>*.png. Files are matched by <key>,
the name up to the first "_". Colours not in the dataset README -> 0 (void).
CLI: python -m ssma_tf.datasets.prepare_freiburg_forest --root R --out O [--modality depth_gray]
"""

import os
import sys

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import colour_to_ids, get_dataset
from ssma_tf.errors import InputError


def _by_key(folder):
    return {name.split("_")[0].split(".")[0]: os.path.join(folder, name)
            for name in common.sorted_files(folder)}


def prepare(root, out, modality="depth_gray"):
    """Convert the train and test splits; returns {split: list path}."""
    definition = get_dataset("freiburg_forest")
    lists = {}
    for split in ("train", "test"):
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        rgb, second, gt = (_by_key(os.path.join(split_dir, sub))
                           for sub in ("rgb", modality, "GT_color"))
        rows = []
        for key, rgb_path in rgb.items():
            for folder, files in ((modality, second), ("GT_color", gt)):
                if key not in files:
                    raise InputError(f"{os.path.join(split_dir, folder)}: no file for {rgb_path} "
                                     f"(matched by the name before the first '_': {key!r})")
            ids = colour_to_ids(common.read_image(gt[key]), definition.colour_map, 0)
            label_path = os.path.join(out, split, "labels", key + ".png")
            common.write_png(label_path, ids)
            rows.append([rgb_path, second[key], label_path])
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{root}: no images under train/rgb or test/rgb")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv, lambda p: p.add_argument(
        "--modality", default="depth_gray",
        help="second modality folder (depth_gray, evi_gray...)"))


if __name__ == "__main__":
    sys.exit(main())
