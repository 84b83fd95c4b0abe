"""The community split layout (splits/<dataset>/<split>/{labeled,unlabeled}.txt, lines
`<image> <mask>`) -> our labeled / unlabeled lists, on a tiny fixture of that layout."""

import os

import cv2
import numpy as np
import pytest

from ssma_tf.data.listfile import read_list
from ssma_tf.datasets import community_splits
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError

IDS = ["2007_000032", "2007_000039", "2008_000001", "2009_000002"]


def _voc_root(tmp_path):
    """JPEGImages/<id>.jpg and SegmentationClass/<id>.png: ids 0, 1 colour (palette-like),
    ids 2, 3 one-channel train ids."""
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    colour_of = {v: k for k, v in get_dataset("voc").colour_map.items()}
    for i, image_id in enumerate(IDS):
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.full((4, 6, 3), 40 * i,
                                                                          np.uint8))
        ids = np.zeros((4, 6), np.uint8)
        ids[1:3, 2:5] = i + 1
        if i < 2:
            rgb = np.array([colour_of[v] for v in ids.ravel()], np.uint8).reshape(4, 6, 3)
            cv2.imwrite(str(root / "SegmentationClass" / f"{image_id}.png"), rgb[..., ::-1])
        else:
            cv2.imwrite(str(root / "SegmentationClass" / f"{image_id}.png"), ids)
    return root


def _split(tmp_path, name, labeled, unlabeled):
    folder = tmp_path / "splits" / "pascal" / name
    folder.mkdir(parents=True)
    for file, ids in (("labeled.txt", labeled), ("unlabeled.txt", unlabeled)):
        (folder / file).write_text("".join(
            f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in ids))
    return folder


def test_a_split_folder_becomes_labeled_rows_with_train_ids_and_unlabeled_images(tmp_path):
    root = _voc_root(tmp_path)
    split = _split(tmp_path, "tiny", IDS[:1] + IDS[2:3], [IDS[1], IDS[3]])
    out = tmp_path / "lists"
    written = community_splits.convert_split(str(root), str(split), str(out), "voc")
    assert written["labeled"][1] == 2 and written["unlabeled"][1] == 2
    labeled = read_list(out / "labeled.txt", ["rgb", "label"])
    unlabeled = read_list(out / "unlabeled.txt", ["rgb"])
    assert [os.path.basename(e.paths[0]) for e in labeled] == [f"{IDS[0]}.jpg", f"{IDS[2]}.jpg"]
    assert [os.path.basename(e.paths[0]) for e in unlabeled] == [f"{IDS[1]}.jpg",
                                                               f"{IDS[3]}.jpg"]
    for entry, value in zip(labeled, (1, 3)):
        ids = cv2.imread(entry.paths[1], cv2.IMREAD_UNCHANGED)
        assert ids.ndim == 2 and set(np.unique(ids)) == {0, value}
        assert ids[1, 2] == value and ids[0, 0] == 0
    # the colour mask was converted into out/labels, the 1-channel one used as it is
    assert labeled[0].paths[1].startswith(str(out / "labels"))
    assert labeled[1].paths[1] == str(root / "SegmentationClass" / f"{IDS[2]}.png")


def test_a_prepared_list_supplies_every_modality_matched_by_image_stem(tmp_path):
    root = _voc_root(tmp_path)
    split = _split(tmp_path, "tiny", IDS[:2], IDS[2:])
    prepared = tmp_path / "prepared.txt"
    for image_id in IDS:
        (root / f"{image_id}_depth.png").write_bytes(b"x")
        (root / f"{image_id}_label.png").write_bytes(b"x")
    prepared.write_text("".join(f"VOC/JPEGImages/{i}.jpg VOC/{i}_depth.png VOC/{i}_label.png\n"
                                for i in reversed(IDS)))
    out = tmp_path / "lists"
    community_splits.convert_split(str(root), str(split), str(out), "voc",
                                   list_path=str(prepared))
    labeled = read_list(out / "labeled.txt", ["rgb", "depth", "label"])
    unlabeled = read_list(out / "unlabeled.txt", ["rgb", "depth"])
    assert [os.path.basename(e.paths[1]) for e in labeled] == [f"{i}_depth.png"
                                                               for i in IDS[:2]]
    assert [os.path.basename(e.paths[1]) for e in unlabeled] == [f"{i}_depth.png"
                                                                 for i in IDS[2:]]
    missing = _split(tmp_path / "other", "tiny", ["2010_999999"], IDS[:1])
    with pytest.raises(InputError, match=r"labeled.txt:1: JPEGImages/2010_999999.jpg is not in"):
        community_splits.convert_split(str(root), str(missing), str(out), "voc",
                                       list_path=str(prepared))


def test_expect_checks_the_published_counts_of_the_split_folder_name(tmp_path):
    root = _voc_root(tmp_path)
    split = _split(tmp_path, "92", IDS[:1], IDS[1:])
    with pytest.raises(InputError, match=r"voc/92: 1 labeled \+ 3 unlabeled, the published "
                                         r"split has 92 \+ 10490"):
        community_splits.convert_split(str(root), str(split), str(tmp_path / "o"), "voc",
                                       expect=True)
    community_splits.check_counts("cityscapes", "1_16", 186, 2789)
    community_splits.check_counts("voc", "u2pl_1_8", 1323, 9259)
    with pytest.raises(InputError, match="no published counts for voc split 'tiny'"):
        community_splits.check_counts("voc", "tiny", 1, 1)
    # without --expect the counts are only reported
    assert community_splits.main(["--root", str(root), "--splits", str(split), "--out",
                                  str(tmp_path / "o"), "--dataset", "voc"]) == 0
    assert community_splits.main(["--root", str(root), "--splits", str(split), "--out",
                                  str(tmp_path / "o"), "--dataset", "voc", "--expect"]) == 2


@pytest.mark.parametrize("labeled, unlabeled, message", [
    ("JPEGImages/a.jpg\n", "JPEGImages/b.jpg SegmentationClass/b.png\n",
     r"labeled.txt:1: expected `<image> <mask>`, found 1 columns"),
    ("JPEGImages/a.jpg SegmentationClass/a.png\n", "JPEGImages/a.jpg SegmentationClass/a.png\n",
     r"unlabeled.txt:1: JPEGImages/a.jpg is also labeled \(labeled.txt line 1\)"),
    ("x.jpg x.png\n\nx.jpg x.png\n", "y.jpg y.png\n", r"labeled.txt:3: x.jpg is listed twice"),
    ("", "y.jpg y.png\n", r"labeled.txt: split file has no samples"),
])
def test_malformed_split_files_are_named_with_their_line(tmp_path, labeled, unlabeled,
                                                         message):
    (tmp_path / "labeled.txt").write_text(labeled)
    (tmp_path / "unlabeled.txt").write_text(unlabeled)
    with pytest.raises(InputError, match=message):
        community_splits.read_split(str(tmp_path))
