"""ScanNet v2 2D frames -> list files `rgb depth label` with the 20 benchmark classes.

Layout: <root>/scene*/color/N.jpg, depth/N.png (uint16 mm), label/N.png. Labels are NYU40 ids,
or raw ScanNet ids when <root>/scannetv2-labels.combined.tsv is present (mapped through its
nyu40id column). Colour and labels are resized to the depth size when they differ. Splits come
from <root>/scannetv2_{train,val}.txt (scene names) when present, else one list "all".
CLI: python -m ssma_tf.datasets.prepare_scannet --root R --out O
"""

import csv
import os
import sys

import cv2
import numpy as np

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError

LABEL_TSV = "scannetv2-labels.combined.tsv"


def raw_to_train_table(tsv_path, nyu40_to_train):
    """Lookup array raw ScanNet id -> train id (255 for unknown) from the combined tsv."""
    table = {}
    with open(tsv_path, newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter="\t"), start=2):
            try:
                raw, nyu40 = int(row["id"]), int(row["nyu40id"])
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(f"{tsv_path}:{number}: expected integer id and nyu40id "
                                 "columns") from err
            table[raw] = nyu40_to_train[nyu40] if 0 <= nyu40 < 256 else 255
    lookup = np.full(max(table, default=0) + 1, 255, np.uint8)
    for raw, train in table.items():
        lookup[raw] = train
    return lookup


def _scene_splits(root):
    scenes = sorted(d for d in os.listdir(root) if d.startswith("scene")
                    and os.path.isdir(os.path.join(root, d)))
    splits = {}
    for split in ("train", "val"):
        path = os.path.join(root, f"scannetv2_{split}.txt")
        if os.path.exists(path):
            wanted = set(open(path).read().split())
            splits[split] = [s for s in scenes if s in wanted]
    return splits or {"all": scenes}


def prepare(root, out):
    """Convert every frame of every scene; returns {split: list path}."""
    common.require_dir(root, "ScanNet")
    nyu40_to_train = get_dataset("scannet").id_map
    tsv = os.path.join(root, LABEL_TSV)
    raw_lookup = raw_to_train_table(tsv, nyu40_to_train) if os.path.exists(tsv) else None
    lists = {}
    for split, scenes in _scene_splits(root).items():
        rows = []
        for scene in scenes:
            for name in common.sorted_files(os.path.join(root, scene, "color"), ".jpg"):
                frame = os.path.splitext(name)[0]
                depth_path = os.path.join(root, scene, "depth", frame + ".png")
                raw_label = os.path.join(root, scene, "label", frame + ".png")
                for path in (depth_path, raw_label):
                    if not os.path.exists(path):
                        raise InputError(f"{path}: missing for {scene}/color/{name}")
                size = common.read_image(depth_path).shape[:2]
                raw = common.resize_to(common.read_image(raw_label), size, nearest=True)
                if raw_lookup is None:
                    label = common.lut(np.minimum(raw, 255).astype(np.uint8), nyu40_to_train)
                else:
                    label = raw_lookup[np.minimum(raw, len(raw_lookup) - 1)]
                    label[raw >= len(raw_lookup)] = 255
                rgb_path = os.path.join(root, scene, "color", name)
                rgb = common.read_image(rgb_path, cv2.IMREAD_COLOR)
                if rgb.shape[:2] != size:
                    rgb_path = os.path.join(out, scene, "color", frame + ".png")
                    common.write_png(rgb_path, common.resize_to(rgb, size, nearest=False))
                label_path = os.path.join(out, scene, "label20", frame + ".png")
                common.write_png(label_path, label)
                rows.append([rgb_path, depth_path, label_path])
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{root}: no frames under scene*/color/*.jpg")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
