"""PASCAL VOC 2012 -> list files `rgb label` (21 classes, 255 ignore, unimodal).

Layout: <root>/JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNG), and
ImageSets/Segmentation/{train,val,trainval}.txt. Palette colours -> class indices (the
boundary colour and anything unknown -> 255) written to <out>/SegmentationClassIds/<id>.png.
CLI: python -m ssma_tf.datasets.prepare_voc --root R --out O
"""

import os
import sys

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import colour_to_ids, get_dataset
from ssma_tf.errors import InputError

SPLITS = ("train", "val", "trainval")


def prepare(root, out):
    """Convert the image sets found; returns {split: list path}."""
    definition = get_dataset("voc")
    sets = os.path.join(root, "ImageSets", "Segmentation")
    converted = {}
    lists = {}
    for split in SPLITS:
        set_path = os.path.join(sets, f"{split}.txt")
        if not os.path.exists(set_path):
            continue
        rows = []
        for number, line in enumerate(open(set_path).read().splitlines(), start=1):
            image_id = line.strip()
            if not image_id:
                continue
            rgb_path = os.path.join(root, "JPEGImages", image_id + ".jpg")
            gt_path = os.path.join(root, "SegmentationClass", image_id + ".png")
            for path in (rgb_path, gt_path):
                if not os.path.exists(path):
                    raise InputError(f"{set_path}:{number}: {path} not found")
            if image_id not in converted:
                label_path = os.path.join(out, "SegmentationClassIds", image_id + ".png")
                ids = colour_to_ids(common.read_image(gt_path), definition.colour_map, 255)
                common.write_png(label_path, ids)
                converted[image_id] = label_path
            rows.append([rgb_path, converted[image_id]])
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{sets}: no train/val/trainval.txt image sets")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
