"""Stanford 2D-3D-S ("SID") -> list files `rgb depth label` (13 classes, 255 ignore).

Layout: <root>/area_<k>/data/{rgb,depth,semantic}/<view>_domain_{rgb,depth,semantic}.png and
<root>/assets/semantic_labels.json (or --labels-json). A semantic pixel's RGB is a 24-bit index
into the json list; the class is the name before the first "_" (<UNK> and unknown -> 255).
Depth (1/512 m per unit, 65535 = missing) is written as mm with 0 = no reading.
Splits as M3L: train = areas 1, 2, 4, 6; val = area 3; test = areas 5a + 5b.
CLI: python -m ssma_tf.datasets.prepare_sid --root R --out O [--labels-json J]
"""

import json
import os
import sys

import numpy as np

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError

SPLIT_AREAS = {"train": ("area_1", "area_2", "area_4", "area_6"), "val": ("area_3",),
               "test": ("area_5a", "area_5b")}
DEPTH_UNITS_PER_M = 512.0


def index_to_class_table(json_path):
    """uint8 array: semantic index -> SID train id (255 for <UNK> and unknown names)."""
    try:
        with open(json_path) as handle:
            names = json.load(handle)
    except (OSError, ValueError) as err:
        raise InputError(f"{json_path}: cannot read semantic labels json: {err}") from err
    if not isinstance(names, list):
        raise InputError(f"{json_path}: expected a JSON list of label names")
    classes = get_dataset("sid").class_names
    return np.array([classes.index(n.split("_")[0]) if n.split("_")[0] in classes else 255
                     for n in map(str, names)], np.uint8)


def semantic_to_ids(semantic_rgb, table):
    index = (semantic_rgb[..., 0].astype(np.int64) << 16
             | semantic_rgb[..., 1].astype(np.int64) << 8
             | semantic_rgb[..., 2])
    ids = np.full(index.shape, 255, np.uint8)
    known = index < len(table)
    ids[known] = table[index[known]]
    return ids


def depth_to_mm(depth):
    mm = np.round(depth.astype(np.float64) * (1000.0 / DEPTH_UNITS_PER_M))
    mm[depth == 65535] = 0
    return np.clip(mm, 0, 65535).astype(np.uint16)


def prepare(root, out, labels_json=None):
    """Convert every area found; returns {split: list path}."""
    table = index_to_class_table(
        labels_json or os.path.join(root, "assets", "semantic_labels.json"))
    lists = {}
    for split, areas in SPLIT_AREAS.items():
        rows = []
        for area in areas:
            data = os.path.join(root, area, "data")
            if not os.path.isdir(data):
                continue
            for name in common.sorted_files(os.path.join(data, "rgb"), "_domain_rgb.png"):
                view = name[: -len("_domain_rgb.png")]
                paths = {kind: os.path.join(data, kind, f"{view}_domain_{kind}.png")
                         for kind in ("depth", "semantic")}
                for path in paths.values():
                    if not os.path.exists(path):
                        raise InputError(f"{path}: missing for {os.path.join(data, 'rgb', name)}")
                depth_path = os.path.join(out, area, "depth", view + ".png")
                label_path = os.path.join(out, area, "label", view + ".png")
                common.write_png(depth_path, depth_to_mm(common.read_image(paths["depth"])))
                common.write_png(label_path, semantic_to_ids(common.read_image(paths["semantic"]),
                                                             table))
                rows.append([os.path.join(data, "rgb", name), depth_path, label_path])
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{root}: no images under area_*/data/rgb/")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv, lambda p: p.add_argument(
        "--labels-json", default=None, help="semantic_labels.json (default <root>/assets/...)"))


if __name__ == "__main__":
    sys.exit(main())
