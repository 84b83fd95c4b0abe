"""Dataset registry and preparers, each on a tiny fixture tree that mimics the real layout."""

import json
import os

import cv2
import numpy as np
import pytest

from ssma_tf.data.listfile import read_list
from ssma_tf.datasets import (
    prepare_cityscapes,
    prepare_freiburg_forest,
    prepare_scannet,
    prepare_sid,
    prepare_sunrgbd,
    prepare_voc,
    registry,
)
from ssma_tf.errors import InputError


def _png(path, image, rgb=True):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if image.ndim == 3 and rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return str(path)


def _jpg(path, image):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return str(path)


def _read(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _rows(list_path, columns):
    return read_list(list_path, columns)


# ---------------------------------------------------------------- registry

def test_registry_definitions_are_consistent():
    for name in registry.DATASET_NAMES:
        d = registry.get_dataset(name)
        assert len(d.class_names) == d.num_classes == len(d.palette)
        assert d.palette.dtype == np.uint8 and d.palette.shape == (d.num_classes, 3)
        assert d.ignore_label in (0, 255)
        if d.id_map is not None:
            assert d.id_map.dtype == np.uint8 and d.id_map.shape == (256,)
            assert set(np.unique(d.id_map)) <= set(range(d.num_classes)) | {d.ignore_label}
        assert d.modalities[0] == "rgb"
    counts = {n: registry.get_dataset(n).num_classes for n in registry.DATASET_NAMES}
    assert counts == {"cityscapes": 19, "cityscapes11": 12, "synthia": 12, "sunrgbd": 37,
                      "scannet": 20, "freiburg_forest": 6, "sid": 13, "voc": 21, "synthetic": 7}


def test_registry_label_conventions():
    city = registry.get_dataset("Cityscapes")
    assert city.class_names[0] == "road" and city.class_names[-1] == "bicycle"
    assert city.id_map[7] == 0 and city.id_map[26] == 13 and city.id_map[0] == 255
    c11 = registry.get_dataset("cityscapes11")
    assert c11.class_names[:4] == ("void", "sky", "building", "road") and c11.ignore_label == 0
    assert c11.id_map[23] == 1 and c11.id_map[7] == 3 and c11.id_map[26] == 8
    assert c11.id_map[24] == 10 and c11.id_map[0] == 0
    assert registry.get_dataset("synthia").class_names == c11.class_names
    sun = registry.get_dataset("sunrgbd")
    assert sun.id_map[0] == 255 and sun.id_map[1] == 0 and sun.id_map[37] == 36
    scannet = registry.get_dataset("scannet")
    assert scannet.id_map[39] == 19 and scannet.id_map[13] == 255
    forest = registry.get_dataset("freiburg_forest")
    assert forest.colour_map[(0, 60, 0)] == forest.colour_map[(102, 102, 51)] == 3
    voc = registry.get_dataset("voc")
    assert tuple(voc.palette[1]) == (128, 0, 0)
    assert tuple(registry.voc_palette()[255]) == (224, 224, 192)
    assert registry.get_dataset("synthetic").class_names[3] == "relief"
    with pytest.raises(InputError, match="unknown.*cityscapes"):
        registry.get_dataset("kitti")


# ---------------------------------------------------------------- Cityscapes

def test_cityscapes_disparity_to_depth():
    disparity = np.array([[0, 1, 257, 1 + 256 * 10]], np.uint16)
    depth = prepare_cityscapes.disparity_to_depth_mm(disparity, 0.2, 2000.0)
    np.testing.assert_array_equal(depth, [[0, 0, 0, 40000]])     # 400 m is beyond uint16 mm


def _cityscapes_tree(root, with_camera):
    stem = "aachen_000000_000019"
    for split in ("train", "val"):
        base = f"{split}/aachen/{stem}"
        _png(root / "leftImg8bit" / f"{base}_leftImg8bit.png", np.full((8, 8, 3), 90, np.uint8))
        _png(root / "disparity" / f"{base}_disparity.png", np.full((8, 8), 1 + 256 * 20, np.uint16))
        _png(root / "gtFine" / f"{base}_gtFine_labelIds.png",
             np.array([[7, 8, 26, 0] * 2] * 8, np.uint8))
        if with_camera:
            os.makedirs(root / "camera" / split / "aachen", exist_ok=True)
            (root / "camera" / f"{base}_camera.json").write_text(
                json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0}}))


@pytest.mark.parametrize("classes", [19, 11])
def test_prepare_cityscapes(tmp_path, classes):
    _cityscapes_tree(tmp_path / "cs", with_camera=True)
    lists = prepare_cityscapes.prepare(str(tmp_path / "cs"), str(tmp_path / "out"), classes)
    assert set(lists) == {"train", "val"}
    (entry,) = _rows(lists["train"], ["rgb", "depth", "label"])
    assert entry.paths[0].endswith("_leftImg8bit.png")
    depth = _read(entry.paths[1])
    assert depth.dtype == np.uint16 and np.all(depth == 20000)     # 0.2 * 2000 / 20 m
    label = _read(entry.paths[2])
    expected = [0, 1, 13, 255] if classes == 19 else [3, 4, 8, 0]
    np.testing.assert_array_equal(label[0, :4], expected)


def test_prepare_cityscapes_defaults_and_errors(tmp_path, capsys):
    _cityscapes_tree(tmp_path / "cs", with_camera=False)
    assert prepare_cityscapes.main(["--root", str(tmp_path / "cs"), "--out",
                                    str(tmp_path / "o")]) == 0
    (entry,) = _rows(tmp_path / "o" / "val.txt", ["rgb", "depth", "label"])
    assert _read(entry.paths[1])[0, 0] == round(0.209313 * 2262.52 / 20 * 1000)
    os.remove(tmp_path / "cs" / "disparity" / "val" / "aachen"
              / "aachen_000000_000019_disparity.png")
    assert prepare_cityscapes.main(["--root", str(tmp_path / "cs"), "--out",
                                    str(tmp_path / "o")]) == 2
    assert "disparity missing" in capsys.readouterr().err
    os.remove(tmp_path / "cs" / "gtFine" / "train" / "aachen"
              / "aachen_000000_000019_gtFine_labelIds.png")
    _png(tmp_path / "cs" / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000019_leftImg8bit.png",
         np.zeros((8, 8, 3), np.uint8))
    _png(tmp_path / "cs" / "disparity" / "train" / "bonn" / "bonn_000000_000019_disparity.png",
         np.zeros((8, 8), np.uint16))
    _png(tmp_path / "cs" / "gtFine" / "train" / "bonn" / "bonn_000000_000019_gtFine_labelIds.png",
         np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=r"train.txt: samples have \[2, 3\] columns.*aachen"):
        prepare_cityscapes.prepare(str(tmp_path / "cs"), str(tmp_path / "o2"))
    with pytest.raises(InputError, match="leftImg8bit"):
        prepare_cityscapes.prepare(str(tmp_path / "nothing"), str(tmp_path / "o"))


# ---------------------------------------------------------------- SUN RGB-D

def test_prepare_sunrgbd(tmp_path):
    root = tmp_path / "sun"
    _jpg(root / "images/train/img-002878.jpg", np.zeros((8, 8, 3), np.uint8))
    _png(root / "depth/train/2878.png", np.full((8, 8), 1500, np.uint16))
    _png(root / "labels/train/img-007928.png", np.array([[0, 1, 37, 5] * 2] * 8, np.uint8))
    _jpg(root / "images/test/img-000001.jpg", np.zeros((8, 8, 3), np.uint8))
    _png(root / "depth/test/1.png", np.full((8, 8), 900, np.uint16))
    _png(root / "labels/test/img-000001.png", np.full((8, 8), 2, np.uint8))
    lists = prepare_sunrgbd.prepare(str(root), str(tmp_path / "out"))
    (train,) = _rows(lists["train"], ["rgb", "depth", "label"])
    assert train.paths[1].endswith(os.path.join("train", "2878.png"))
    np.testing.assert_array_equal(_read(train.paths[2])[0, :4], [255, 0, 36, 4])
    (test,) = _rows(lists["test"], ["rgb", "depth", "label"])
    assert np.all(_read(test.paths[2]) == 1)
    os.remove(root / "labels/test/img-000001.png")
    with pytest.raises(InputError, match="img-000001.png: missing"):
        prepare_sunrgbd.prepare(str(root), str(tmp_path / "out"))


# ---------------------------------------------------------------- ScanNet

def test_prepare_scannet(tmp_path):
    root = tmp_path / "scannet"
    for scene in ("scene0000_00", "scene0001_00"):
        _jpg(root / scene / "color" / "0.jpg", np.full((16, 16, 3), 100, np.uint8))
        _png(root / scene / "depth" / "0.png", np.full((8, 8), 1200, np.uint16))
        _png(root / scene / "label" / "0.png",
             np.array([[1, 1, 39, 39, 13, 13, 0, 0] * 2] * 16, np.uint8))
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scannetv2_val.txt").write_text("scene0001_00\n")
    lists = prepare_scannet.prepare(str(root), str(tmp_path / "out"))
    assert set(lists) == {"train", "val"}
    (entry,) = _rows(lists["train"], ["rgb", "depth", "label"])
    assert "scene0000_00" in entry.paths[0]
    rgb, label = _read(entry.paths[0]), _read(entry.paths[2])
    assert rgb.shape == (8, 8, 3) and label.shape == (8, 8)          # resized to the depth size
    assert set(np.unique(label)) == {0, 19, 255}
    (root / prepare_scannet.LABEL_TSV).write_text("id\tnyu40id\n1\t39\n39\t2\n")
    lists = prepare_scannet.prepare(str(root), str(tmp_path / "out2"))
    (entry,) = _rows(lists["val"], ["rgb", "depth", "label"])
    assert set(np.unique(_read(entry.paths[2]))) == {19, 1, 255}


# ---------------------------------------------------------------- Freiburg Forest

def test_prepare_freiburg_forest(tmp_path):
    root = tmp_path / "forest"
    gt = np.zeros((8, 8, 3), np.uint8)
    gt[0, :7] = [(170, 170, 170), (0, 255, 0), (102, 102, 51), (0, 60, 0), (0, 120, 255),
                 (0, 0, 0), (255, 255, 255)]
    for split in ("train", "test"):
        _png(root / split / "rgb" / "b1-09517_Clipped.png", np.zeros((8, 8, 3), np.uint8))
        _png(root / split / "depth_gray" / "b1-09517_Clipped.png", np.zeros((8, 8), np.uint8))
        _png(root / split / "GT_color" / "b1-09517_mask.png", gt)
    lists = prepare_freiburg_forest.prepare(str(root), str(tmp_path / "out"))
    (entry,) = _rows(lists["test"], ["rgb", "depth", "label"])
    np.testing.assert_array_equal(_read(entry.paths[2])[0, :7], [1, 2, 3, 3, 4, 5, 0])
    with pytest.raises(InputError, match="evi_gray"):
        prepare_freiburg_forest.prepare(str(root), str(tmp_path / "out"), modality="evi_gray")


# ---------------------------------------------------------------- Stanford Indoor

def test_prepare_sid(tmp_path):
    root = tmp_path / "sid"
    names = ["<UNK>_0_<UNK>_0", "beam_1_hallway_1_0", "wall_3_office_1_2", "window_2_office_2_1"]
    os.makedirs(root / "assets")
    (root / "assets" / "semantic_labels.json").write_text(json.dumps(names))
    semantic = np.zeros((8, 8, 3), np.uint8)
    semantic[0, :5, 2] = [0, 1, 2, 3, 200]                      # index = B here
    semantic[1, 0] = (13, 13, 13)                               # far beyond the json -> 255
    for area in ("area_1", "area_3", "area_5a"):
        view = "camera_abc_office_1_frame_0"
        _png(root / area / "data" / "rgb" / f"{view}_domain_rgb.png", np.zeros((8, 8, 3), np.uint8))
        _png(root / area / "data" / "depth" / f"{view}_domain_depth.png",
             np.array([[512, 65535, 1024, 0] * 2] * 8, np.uint16))
        _png(root / area / "data" / "semantic" / f"{view}_domain_semantic.png", semantic)
    lists = prepare_sid.prepare(str(root), str(tmp_path / "out"))
    assert set(lists) == {"train", "val", "test"}
    (entry,) = _rows(lists["val"], ["rgb", "depth", "label"])
    assert "area_3" in entry.paths[0]
    np.testing.assert_array_equal(_read(entry.paths[1])[0, :4], [1000, 0, 2000, 0])
    label = _read(entry.paths[2])
    np.testing.assert_array_equal(label[0, :5], [255, 0, 11, 12, 255])
    assert label[1, 0] == 255


# ---------------------------------------------------------------- PASCAL VOC

def test_prepare_voc(tmp_path):
    root = tmp_path / "VOC2012"
    palette = registry.voc_palette()
    gt = np.zeros((8, 8, 3), np.uint8)
    gt[0, :3] = [palette[15], palette[255], palette[20]]
    for image_id in ("2007_000032", "2007_000039"):
        _jpg(root / "JPEGImages" / f"{image_id}.jpg", np.zeros((8, 8, 3), np.uint8))
        _png(root / "SegmentationClass" / f"{image_id}.png", gt)
    os.makedirs(root / "ImageSets" / "Segmentation")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n\n")
    lists = prepare_voc.prepare(str(root), str(tmp_path / "out"))
    (entry,) = _rows(lists["train"], ["rgb", "label"])
    np.testing.assert_array_equal(_read(entry.paths[1])[0, :4], [15, 255, 20, 0])
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\nmissing_id\n")
    with pytest.raises(InputError, match=r"val.txt:2: .*missing_id.jpg not found"):
        prepare_voc.prepare(str(root), str(tmp_path / "out"))
