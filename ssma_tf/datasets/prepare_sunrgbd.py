"""SUN RGB-D (ankurhanda/sunrgbd-meta-data layout) -> list files `rgb depth label`.

Layout: images/<split>/img-NNNNNN.jpg, depth/<split>/N.png, labels/<split>/img-MMMMMM.png with
M = N + 5050 for train (M = N for test). Labels 0 unlabeled, 1..37 are shifted to train ids
0..36 with 0 -> 255 and written to <out>/labels/<split>/. Depth PNGs are listed unchanged.
CLI: python -m ssma_tf.datasets.prepare_sunrgbd --root R --out O
"""

import os
import re
import sys

from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError

LABEL_OFFSET = {"train": 5050, "test": 0}
_IMAGE_NAME = re.compile(r"^img-(\d+)\.(jpg|png)$")


def prepare(root, out):
    """Convert the train and test splits found under `root`; returns {split: list path}."""
    id_map = get_dataset("sunrgbd").id_map
    lists = {}
    for split, offset in LABEL_OFFSET.items():
        image_dir = os.path.join(root, "images", split)
        if not os.path.isdir(image_dir):
            continue
        rows = []
        for name in common.sorted_files(image_dir):
            match = _IMAGE_NAME.match(name)
            if not match:
                continue
            index = int(match.group(1))
            depth_path = os.path.join(root, "depth", split, f"{index}.png")
            raw_label = os.path.join(root, "labels", split, f"img-{index + offset:06d}.png")
            for path in (depth_path, raw_label):
                if not os.path.exists(path):
                    raise InputError(f"{path}: missing for {os.path.join(image_dir, name)}")
            label_path = os.path.join(out, "labels", split, f"img-{index:06d}.png")
            common.write_png(label_path, common.lut(common.read_image(raw_label), id_map))
            rows.append([os.path.join(image_dir, name), depth_path, label_path])
        if rows:
            lists[split] = common.write_list(os.path.join(out, f"{split}.txt"), rows)
    if not lists:
        raise InputError(f"{root}: no images under images/train or images/test")
    return lists


def main(argv=None):
    return common.cli(prepare, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
