"""Cityscapes -> list files `rgb depth label`: labelIds -> train ids, disparity -> depth in mm.

Layout: leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png, disparity/.../<stem>_disparity.png,
gtFine/.../<stem>_gtFine_labelIds.png, optional camera/.../<stem>_camera.json.
Depth = baseline * fx / d with d = (v - 1) / 256 for v > 0 (v = 0 or beyond 65.535 m -> 0,
no reading). Writes <out>/depth/..., <out>/<classes>/... and <out>/<split>.txt.
CLI: python -m ssma_tf.datasets.prepare_cityscapes --root R --out O [--classes 19|11]
"""

import json
import os
import sys

import numpy as np

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError

BASELINE_M, FX_PX = 0.209313, 2262.52
SPLITS = ("train", "val", "test")


def camera_parameters(path):
    """(baseline m, fx px) from a Cityscapes camera json; the dataset defaults if absent."""
    if not os.path.exists(path):
        return BASELINE_M, FX_PX
    try:
        with open(path) as handle:
            camera = json.load(handle)
        return float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: bad camera json ({err!r}); expected extrinsic.baseline "
                         "and intrinsic.fx") from err


def disparity_to_depth_mm(disparity, baseline=BASELINE_M, fx=FX_PX):
    """uint16 Cityscapes disparity PNG -> uint16 depth in mm (0 = no reading)."""
    d = (disparity.astype(np.float64) - 1.0) / 256.0
    with np.errstate(divide="ignore"):
        depth_mm = np.where(d > 0, baseline * fx / np.where(d > 0, d, 1.0) * 1000.0, 0.0)
    depth_mm[(depth_mm > 65535) | (disparity == 0)] = 0
    return np.round(depth_mm).astype(np.uint16)


def prepare(root, out, classes=19):
    """Convert every split found under `root`; returns {split: list path}."""
    definition = get_dataset("cityscapes" if int(classes) == 19 else "cityscapes11")
    label_dir = f"labels{int(classes)}"
    common.require_dir(os.path.join(root, "leftImg8bit"), "Cityscapes leftImg8bit")
    lists = {}
    for split in SPLITS:
        split_dir = os.path.join(root, "leftImg8bit", split)
        if not os.path.isdir(split_dir):
            continue
        rows = []
        for city in sorted(os.listdir(split_dir)):
            for name in common.sorted_files(os.path.join(split_dir, city), "_leftImg8bit.png"):
                stem = name[: -len("_leftImg8bit.png")]
                rel = os.path.join(split, city, stem)
                disparity_path = os.path.join(root, "disparity", rel + "_disparity.png")
                if not os.path.exists(disparity_path):
                    raise InputError(f"{disparity_path}: disparity missing for {name}")
                baseline, fx = camera_parameters(os.path.join(root, "camera", rel + "_camera.json"))
                depth = disparity_to_depth_mm(common.read_image(disparity_path), baseline, fx)
                depth_path = os.path.join(out, "depth", rel + "_depth.png")
                common.write_png(depth_path, depth)
                row = [os.path.join(split_dir, city, name), depth_path]
                gt_path = os.path.join(root, "gtFine", rel + "_gtFine_labelIds.png")
                if os.path.exists(gt_path):
                    label_path = os.path.join(out, label_dir, rel + "_trainIds.png")
                    common.write_png(label_path, common.lut(common.read_image(gt_path),
                                                            definition.id_map))
                    row.append(label_path)
                rows.append(row)
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{root}: no images under leftImg8bit/{{{','.join(SPLITS)}}}/<city>/")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv, lambda p: p.add_argument(
        "--classes", type=int, choices=(19, 11), default=19,
        help="19 official train ids (255 ignore) or the SSMA 11 classes (0 void)"))


if __name__ == "__main__":
    sys.exit(main())
