"""The community's semi-supervised split lists -> our labeled / unlabeled list files.

UniMatch, ST++ and U2PL publish their splits as `splits/<dataset>/<split>/labeled.txt` and
`unlabeled.txt`, one sample a line, `<image> <mask>` relative to the dataset root, e.g.
`JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png` (PASCAL VOC train_aug) or
`leftImg8bit/train/jena/jena_000078_000019_leftImg8bit.png
gtFine/train/jena/jena_000078_000019_gtFine_labelTrainIds.png` (Cityscapes). Get them from
the `splits/` folder of github.com/LiheYoung/UniMatch (pascal: 92, 183, 366, 732, 1464,
1_16, 1_8, 1_4, u2pl_1_16, u2pl_1_8, u2pl_1_4; cityscapes: 1_30, 1_16, 1_8, 1_4, 1_2).

Our rows, written to `<out>/labeled.txt` and `<out>/unlabeled.txt` (unlabeled rows have no
label column: `convert_to_tfrecords.py --unlabeled`):
- with `--list L` (a prepared list, e.g. prepare_cityscapes' train.txt `rgb depth label`),
  each split image is the row of L whose first column has the same file stem; labeled
  rows keep the whole row, unlabeled ones drop the label (other modalities come along);
- without, image = <root>/<image> and label = <root>/<mask>: a 1-channel mask is used as it
  is (train ids, as the authors' preprocessed downloads), a colour mask (VOC's palette PNG)
  is converted with the dataset's colour map to <out>/labels/<stem>.png.
The mask column of unlabeled lines is not read (UniMatch reads it only for its padding
marker; our padding is found from the zero inputs).

The counts are printed; `--expect` checks them against the published ones (`EXPECTED`).
Duplicates and images both labeled and unlabeled are errors.
CLI: python -m ssma_tf.datasets.community_splits --root R --splits S/pascal/92 --out O
    --dataset voc [--list L] [--expect]
"""

import argparse
import os
import sys

from ssma_tf.data.listfile import read_list
from ssma_tf.datasets import prepare_common as common
from ssma_tf.datasets.registry import colour_to_ids, get_dataset
from ssma_tf.errors import InputError, print_cli_error

SPLIT_FILES = ("labeled.txt", "unlabeled.txt")
_VOC_CLASSIC = {"92": (92, 10490), "183": (183, 10399), "366": (366, 10216),
                "732": (732, 9850), "1464": (1464, 9118)}
_VOC_BLENDED = {"1_16": (662, 9920), "1_8": (1323, 9259), "1_4": (2646, 7936)}
EXPECTED = {   # (labeled, unlabeled) per published split folder
    "voc": {**_VOC_CLASSIC, **_VOC_BLENDED,
            **{f"u2pl_{name}": counts for name, counts in _VOC_BLENDED.items()}},
    "cityscapes": {"1_30": (100, 2875), "1_16": (186, 2789), "1_8": (372, 2603),
                   "1_4": (744, 2231), "1_2": (1488, 1487)},
}


def stem(path):
    """File name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def read_split_file(path):
    """[(line number, image, mask)] of a `<image> <mask>` split file; InputError naming the
    file and line for a line without exactly two columns, a duplicate image or no lines."""
    rows, seen = [], {}
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except OSError as err:
        raise InputError(f"cannot read split file {path}: {err}") from err
    for number, text in enumerate(lines, start=1):
        columns = text.split()
        if not columns:
            continue
        if len(columns) != 2:
            raise InputError(f"{path}:{number}: expected `<image> <mask>`, found "
                             f"{len(columns)} columns: {text!r}")
        if columns[0] in seen:
            raise InputError(f"{path}:{number}: {columns[0]} is listed twice (also line "
                             f"{seen[columns[0]]})")
        seen[columns[0]] = number
        rows.append((number, *columns))
    if not rows:
        raise InputError(f"{path}: split file has no samples")
    return rows


def read_split(split_dir):
    """(labeled rows, unlabeled rows) of a split folder (`read_split_file` rows); InputError
    when an image is in both."""
    labeled, unlabeled = (read_split_file(os.path.join(split_dir, name)) for name in SPLIT_FILES)
    lines = {image: number for number, image, _ in labeled}
    for number, image, _ in unlabeled:
        if image in lines:
            raise InputError(f"{os.path.join(split_dir, SPLIT_FILES[1])}:{number}: {image} is "
                             f"also labeled ({SPLIT_FILES[0]} line {lines[image]})")
    return labeled, unlabeled


def check_counts(dataset, split_name, labeled, unlabeled):
    """InputError unless (labeled, unlabeled) are the published counts of the split."""
    known = EXPECTED.get(dataset, {})
    if split_name not in known:
        raise InputError(f"--expect: no published counts for {dataset} split {split_name!r}; "
                         f"known: {', '.join(known) or 'none'}")
    want = known[split_name]
    if (labeled, unlabeled) != want:
        raise InputError(f"split {dataset}/{split_name}: {labeled} labeled + {unlabeled} "
                         f"unlabeled, the published split has {want[0]} + {want[1]}")


def _matcher(list_path):
    """image path -> row of the prepared list with that first-column stem."""
    try:
        with open(list_path, encoding="utf-8-sig") as handle:
            first = next((line.strip() for line in handle if line.strip()), "")
    except OSError as err:
        raise InputError(f"cannot read list file {list_path}: {err}") from err
    width = len(first.split("\t") if "\t" in first else first.split())
    columns = [f"column{i}" for i in range(max(width, 1))]
    rows = {}
    for entry in read_list(list_path, columns):
        rows.setdefault(stem(entry.paths[0]), entry.paths)

    def match(image, where):
        if stem(image) not in rows:
            raise InputError(f"{where}: {image} is not in {list_path}")
        return list(rows[stem(image)])
    return match


def _label(root, mask, out, definition, where):
    """The label path for `mask`: itself if 1-channel, else its colour map conversion."""
    path = os.path.join(root, mask)
    if not os.path.exists(path):
        raise InputError(f"{where}: {path} not found")
    image = common.read_image(path)
    if image.ndim == 2:
        return path
    if definition.colour_map is None:
        raise InputError(f"{where}: {path} is a colour mask and dataset {definition.name} has "
                         "no colour map; use 1-channel train-id masks")
    converted = os.path.join(out, "labels", stem(mask) + ".png")
    common.write_png(converted, colour_to_ids(image, definition.colour_map, 255))
    return converted


def convert_split(root, split_dir, out, dataset, *, list_path=None, expect=False):
    """Write <out>/labeled.txt and <out>/unlabeled.txt from the split folder; returns
    {"labeled": (path, count), "unlabeled": (path, count)}."""
    labeled, unlabeled = read_split(split_dir)
    split_name = os.path.basename(os.path.normpath(split_dir))
    if expect:
        check_counts(dataset, split_name, len(labeled), len(unlabeled))
    definition = get_dataset(dataset)
    match = _matcher(list_path) if list_path else None
    files = [os.path.join(split_dir, name) for name in SPLIT_FILES]
    labeled_rows, unlabeled_rows = [], []
    for number, image, mask in labeled:
        where = f"{files[0]}:{number}"
        if match:
            labeled_rows.append(match(image, where))
        else:
            image_path = os.path.join(root, image)
            if not os.path.exists(image_path):
                raise InputError(f"{where}: {image_path} not found")
            labeled_rows.append([image_path, _label(root, mask, out, definition, where)])
    for number, image, _ in unlabeled:
        where = f"{files[1]}:{number}"
        if match:
            unlabeled_rows.append(match(image, where)[:-1])
        else:
            image_path = os.path.join(root, image)
            if not os.path.exists(image_path):
                raise InputError(f"{where}: {image_path} not found")
            unlabeled_rows.append([image_path])
    return {"labeled": (common.write_list(os.path.join(out, "labeled.txt"), labeled_rows),
                        len(labeled_rows)),
            "unlabeled": (common.write_list(os.path.join(out, "unlabeled.txt"), unlabeled_rows),
                          len(unlabeled_rows))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the dataset root the split paths are"
                        " relative to")
    parser.add_argument("--splits", required=True, help="a split folder holding labeled.txt and"
                        " unlabeled.txt, e.g. UniMatch/splits/pascal/92")
    parser.add_argument("--out", required=True, help="folder for labeled.txt / unlabeled.txt")
    parser.add_argument("--dataset", required=True, choices=sorted(EXPECTED),
                        help="dataset definition (colour map, published counts)")
    parser.add_argument("--list", default=None, help="prepared list to take the rows from"
                        " (matched by image file stem), e.g. prepare_cityscapes' train.txt")
    parser.add_argument("--expect", action="store_true", help="fail unless the counts are the"
                        " published ones for this split folder's name")
    args = parser.parse_args(argv)
    try:
        written = convert_split(args.root, args.splits, args.out, args.dataset,
                                list_path=args.list, expect=args.expect)
    except InputError as err:
        return print_cli_error(err)
    for part, (path, count) in written.items():
        print(f"{part}: {count} samples -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
