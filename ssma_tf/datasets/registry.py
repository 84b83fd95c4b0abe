"""Dataset definitions: class names, palettes, label conventions and raw-id -> train-id maps.

Two label conventions exist (docs/architecture.md):
- ``ignore_label=255``: train ids 0..N-1, 255 = unlabeled (Cityscapes-19, SUN RGB-D, ScanNet,
  Stanford Indoor, PASCAL VOC, synthetic; the M3L / TorchSemiSeg / official-benchmark way).
- ``ignore_label=0``: SSMA style, id 0 = void is an output channel that is never trained nor
  scored, classes are 1..N-1 (Cityscapes-11, Synthia-11, Freiburg Forest).

``id_map`` (uint8[256]) turns a raw label PNG value into a train id; ``colour_map`` turns a
colour-coded ground truth pixel (RGB) into a train id, unlisted colours -> ``ignore_label``.
"""

import colorsys
import dataclasses

import numpy as np

from ssma_tf.data import synthetic
from ssma_tf.errors import InputError


@dataclasses.dataclass(frozen=True)
class DatasetDef:
    """One dataset's label space and the modalities its preparer lists (column order)."""

    name: str
    class_names: tuple
    palette: np.ndarray          # uint8 [num_classes, 3], RGB
    num_classes: int
    ignore_label: int
    id_map: np.ndarray | None    # uint8 [256] raw value -> train id
    modalities: tuple            # list-file columns before the label, e.g. ("rgb", "depth")
    colour_map: dict | None = None   # {(r, g, b): train id} for colour-coded ground truth


def distinct_palette(count, void_first=False):
    """Evenly spread, well separated RGB colours; black for the void class if `void_first`."""
    colours = [(0, 0, 0)] if void_first else []
    n = count - len(colours)
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.7
        colours.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, value)))
    return np.array(colours, dtype=np.uint8)


def _map_from(pairs, default):
    table = np.full(256, default, dtype=np.uint8)
    for raw, train in pairs:
        if 0 <= raw < 256:
            table[raw] = train
    return table


def _cityscapes():
    from cityscapesscripts.helpers.labels import labels

    trained = sorted((lab for lab in labels if 0 <= lab.trainId < 255),
                     key=lambda lab: lab.trainId)
    return DatasetDef(
        name="cityscapes", class_names=tuple(lab.name for lab in trained),
        palette=np.array([lab.color for lab in trained], np.uint8), num_classes=19,
        ignore_label=255, id_map=_map_from(((lab.id, lab.trainId) for lab in labels), 255),
        modalities=("rgb", "depth"))


CITYSCAPES11_CLASSES = ("void", "sky", "building", "road", "sidewalk", "fence", "vegetation",
                        "pole", "car/truck/bus", "traffic sign", "pedestrian",
                        "rider/bicycle/motorcycle")
# Best-effort grouping of official Cityscapes label names into the SSMA 11 classes. The SSMA
# authors never published theirs; this one is ours. Unlisted labels (ground, rail track,
# dynamic, static, terrain is vegetation here, ...) -> 0 void.
CITYSCAPES11_GROUPS = {
    "sky": ("sky",),
    "building": ("building", "wall", "bridge", "tunnel"),
    "road": ("road", "parking"),
    "sidewalk": ("sidewalk",),
    "fence": ("fence", "guard rail"),
    "vegetation": ("vegetation", "terrain"),
    "pole": ("pole", "polegroup"),
    "car/truck/bus": ("car", "truck", "bus", "caravan", "trailer", "train"),
    "traffic sign": ("traffic sign", "traffic light"),
    "pedestrian": ("person",),
    "rider/bicycle/motorcycle": ("rider", "bicycle", "motorcycle"),
}


def _cityscapes11():
    from cityscapesscripts.helpers.labels import name2label

    pairs = [(name2label[raw].id, CITYSCAPES11_CLASSES.index(group))
             for group, raws in CITYSCAPES11_GROUPS.items() for raw in raws]
    palette = [(0, 0, 0)] + [name2label[CITYSCAPES11_GROUPS[c][0]].color
                             for c in CITYSCAPES11_CLASSES[1:]]
    return DatasetDef(name="cityscapes11", class_names=CITYSCAPES11_CLASSES,
                      palette=np.array(palette, np.uint8), num_classes=12, ignore_label=0,
                      id_map=_map_from(pairs, 0), modalities=("rgb", "depth"))


def _synthia():
    base = _cityscapes11()
    # Synthia's own raw ids differ from Cityscapes'; labels must already be in 0..11.
    return dataclasses.replace(base, name="synthia", id_map=None)


SUNRGBD_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
                   "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
                   "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
                   "fridge", "tv", "paper", "towel", "shower curtain", "box", "whiteboard",
                   "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag")


def _sunrgbd():
    # ankurhanda/sunrgbd-meta-data labels: 0 unlabeled, 1..37 classes -> shift to 0..36, 0 -> 255.
    return DatasetDef(name="sunrgbd", class_names=SUNRGBD_CLASSES,
                      palette=distinct_palette(37), num_classes=37, ignore_label=255,
                      id_map=_map_from(((k, k - 1) for k in range(1, 38)), 255),
                      modalities=("rgb", "depth"))


# ScanNet v2 benchmark classes and their NYU40 ids (label PNGs exported with nyu40 ids).
SCANNET_CLASSES = (("wall", 1), ("floor", 2), ("cabinet", 3), ("bed", 4), ("chair", 5),
                   ("sofa", 6), ("table", 7), ("door", 8), ("window", 9), ("bookshelf", 10),
                   ("picture", 11), ("counter", 12), ("desk", 14), ("curtain", 16),
                   ("refrigerator", 24), ("shower curtain", 28), ("toilet", 33), ("sink", 34),
                   ("bathtub", 36), ("other furniture", 39))


def _scannet():
    return DatasetDef(name="scannet", class_names=tuple(n for n, _ in SCANNET_CLASSES),
                      palette=distinct_palette(20), num_classes=20, ignore_label=255,
                      id_map=_map_from(((nyu, i) for i, (_, nyu) in enumerate(SCANNET_CLASSES)),
                                       255),
                      modalities=("rgb", "depth"))


def _freiburg_forest():
    colour_map = {(170, 170, 170): 1, (0, 255, 0): 2, (102, 102, 51): 3, (0, 60, 0): 3,
                  (0, 120, 255): 4, (0, 0, 0): 5}
    palette = [(255, 255, 255), (170, 170, 170), (0, 255, 0), (102, 102, 51), (0, 120, 255),
               (0, 0, 0)]
    return DatasetDef(name="freiburg_forest",
                      class_names=("void", "trail", "grass", "vegetation", "sky", "obstacle"),
                      palette=np.array(palette, np.uint8), num_classes=6, ignore_label=0,
                      id_map=None, modalities=("rgb", "depth"), colour_map=colour_map)


# Stanford 2D-3D-S: ids follow the alphabetical order of the semantic_labels.json prefixes.
SID_CLASSES = ("beam", "board", "bookcase", "ceiling", "chair", "clutter", "column", "door",
               "floor", "sofa", "table", "wall", "window")


def _sid():
    return DatasetDef(name="sid", class_names=SID_CLASSES, palette=distinct_palette(13),
                      num_classes=13, ignore_label=255, id_map=None, modalities=("rgb", "depth"))


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def voc_palette(count=256):
    """The PASCAL VOC colour of each index (bit-interleaved), RGB uint8 [count, 3]."""
    palette = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = rgb
    return palette


def _voc():
    colours = voc_palette()
    colour_map = {tuple(int(c) for c in colours[i]): i for i in range(21)}
    return DatasetDef(name="voc", class_names=VOC_CLASSES, palette=colours[:21], num_classes=21,
                      ignore_label=255, id_map=_map_from(((i, i) for i in range(21)), 255),
                      modalities=("rgb",), colour_map=colour_map)


def _synthetic():
    return DatasetDef(name="synthetic", class_names=synthetic.CLASS_NAMES,
                      palette=synthetic.PALETTE.copy(), num_classes=synthetic.NUM_CLASSES,
                      ignore_label=synthetic.IGNORE_LABEL, id_map=None,
                      modalities=("rgb", "depth"))


_BUILDERS = {
    "cityscapes": _cityscapes, "cityscapes11": _cityscapes11, "synthia": _synthia,
    "sunrgbd": _sunrgbd, "scannet": _scannet, "freiburg_forest": _freiburg_forest,
    "sid": _sid, "voc": _voc, "synthetic": _synthetic,
}
DATASET_NAMES = tuple(_BUILDERS)


def get_dataset(name) -> DatasetDef:
    """The definition registered under `name` (case-insensitive); InputError lists the names."""
    key = str(name).lower().replace("-", "_")
    if key not in _BUILDERS:
        raise InputError(f"dataset {name!r}: unknown, expected one of {', '.join(DATASET_NAMES)}")
    return _BUILDERS[key]()


def colour_to_ids(colour_image, colour_map, default):
    """Map an RGB uint8 HxWx3 ground truth to uint8 ids via `colour_map`; others -> `default`."""
    packed = (colour_image[..., 0].astype(np.uint32) << 16
              | colour_image[..., 1].astype(np.uint32) << 8
              | colour_image[..., 2])
    ids = np.full(packed.shape, default, np.uint8)
    for (r, g, b), train_id in colour_map.items():
        ids[packed == (r << 16 | g << 8 | b)] = train_id
    return ids
