"""TFRecord schema: modality specs, the JSON sidecar, shard names, Example encode/decode.

Records written by the converter hold one `tf.train.Example` per sample with its modalities
and label stored losslessly in one image format: "png" (default; 16-bit depth stays 16-bit) or
"raw" (uncompressed little-endian pixels, ~3x larger, no inflate to decode), and a sidecar
`<stem>.info.json` describing them. Legacy SSMA records (raw BGR bytes, no sidecar) are read too.
"""

import dataclasses
import glob
import json
import os
import re

import cv2
import numpy as np
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.io_utils import atomic_write

ENCODINGS = ("color", "image", "raw", "jet", "hha")
IMAGE_FORMATS = ("png", "raw")
_RECORD_EXTENSIONS = (".tfrecords", ".tfrecord", ".records", ".record", ".tfr")
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}\.tfrecord$")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """How one modality is stored: name, encoding, channel count, dtype, depth units."""

    name: str
    encoding: str
    channels: int
    dtype: str
    depth_scale: float = 0.001

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise InputError(f"modality {self.name!r}: unknown encoding {self.encoding!r}, "
                             f"expected one of {', '.join(ENCODINGS)}")
        if self.channels not in (1, 3):
            raise InputError(f"modality {self.name!r}: channels must be 1 or 3, "
                             f"got {self.channels}")
        if self.dtype not in ("uint8", "uint16"):
            raise InputError(f"modality {self.name!r}: dtype must be uint8 or uint16, "
                             f"got {self.dtype!r}")

    @property
    def photometric(self) -> bool:
        """True for camera colour images (photometric augmentation applies)."""
        return self.encoding == "color"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d) -> "ModalitySpec":
        return cls(name=d["name"], encoding=d["encoding"], channels=int(d["channels"]),
                   dtype=d["dtype"], depth_scale=float(d.get("depth_scale", 0.001)))


@dataclasses.dataclass
class DatasetInfo:
    """The JSON sidecar `<stem>.info.json` written beside the records."""

    modalities: list
    labeled: bool
    num_examples: int
    files: list
    num_classes: int | None = None
    ignore_label: int = 255
    class_histogram: list | None = None
    command: str = ""
    legacy: bool = False
    image_format: str = "png"        # how pixels are stored in the Examples: png | raw
    image_size: dict | None = None   # {"min": [h, w], "max": [h, w]} over the examples
    file_examples: list | None = None   # examples in each of `files`, in order

    def __post_init__(self):
        check_image_format(self.image_format)

    @property
    def modality_names(self) -> list:
        return [m.name for m in self.modalities]

    def spec(self, name) -> ModalitySpec:
        """The spec of modality `name`; InputError listing the known ones otherwise."""
        for m in self.modalities:
            if m.name == name:
                return m
        raise InputError(f"records have no modality {name!r}; they hold {self.modality_names}")

    def expected_examples(self, path):
        """Examples the sidecar counts in record file `path` (matched by name), or None."""
        counts = dict(zip(map(os.path.basename, self.files), self.file_examples or []))
        return counts.get(os.path.basename(path))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["modalities"] = [m.to_json() for m in self.modalities]
        return d

    @classmethod
    def from_json(cls, d) -> "DatasetInfo":
        d = dict(d)
        d["modalities"] = [ModalitySpec.from_json(m) for m in d["modalities"]]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def write(self, path):
        """Write the sidecar atomically."""
        with atomic_write(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")

    @classmethod
    def read(cls, path) -> "DatasetInfo":
        """Read a sidecar; InputError naming the file if it is not a valid one."""
        try:
            with open(path) as f:
                return cls.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{path}: not a valid dataset sidecar ({type(e).__name__}: {e})") from e


def check_image_format(image_format):
    """InputError unless `image_format` is one of IMAGE_FORMATS."""
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, "
                         f"got {image_format!r}")


def record_stem(record_path) -> str:
    """'out/train.tfrecords' -> 'out/train' (one known record extension stripped)."""
    path = str(record_path)
    for ext in _RECORD_EXTENSIONS:
        if path.endswith(ext) and len(path) > len(ext):
            return path[: -len(ext)]
    return path


def sidecar_path(record_path) -> str:
    """'<stem>.info.json' for a record path."""
    return record_stem(record_path) + ".info.json"


def shard_paths(record_path, num_shards) -> list:
    """[record_path] for one shard, else '<stem>-0000i-of-0000N.tfrecord'."""
    if num_shards < 1:
        raise InputError(f"number of shards must be >= 1, got {num_shards}")
    if num_shards == 1:
        return [str(record_path)]
    stem = record_stem(record_path)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def op_free_message(message):
    """A TensorFlow error message without its op names ({{function_node ...}}, [Op:...]
    and the empty ' name: ' eager ops append)."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]( name: ?\S*)?", "", message)
    return text.strip().splitlines()[0].strip()


def _legacy_info(files, legacy_modalities):
    """Legacy SSMA info: modality count taken from the first record unless given."""
    if legacy_modalities is None:
        try:
            first = next(iter(tf.data.TFRecordDataset(files[0]).take(1)), None)
        except tf.errors.DataLossError as exc:
            raise InputError(f"{files[0]}: not a TFRecord file ({op_free_message(exc.message)})"
                             f" and no sidecar {sidecar_path(files[0])}; give the converter's "
                             f"--record path, not a list file") from None
        if first is None:
            raise InputError(f"{files[0]}: record file is empty")
        example = tf.train.Example.FromString(first.numpy())
        keys = example.features.feature
        if "modality1" not in keys:
            raise InputError(f"{files[0]}: no sidecar {sidecar_path(files[0])} and not an SSMA "
                             f"record (features: {sorted(keys)})")
        legacy_modalities = ["rgb", "depth"] if "modality2" in keys else ["rgb"]
    specs = [m if isinstance(m, ModalitySpec) else
             ModalitySpec(m, "color" if i == 0 else "image", 3, "uint8")
             for i, m in enumerate(legacy_modalities)]
    # SSMA datasets use label 0 as void; num_examples 0 means "not counted".
    return DatasetInfo(modalities=specs, labeled=True, num_examples=0, files=list(files),
                       ignore_label=0, legacy=True)


def _sidecar_for_shard(path):
    stem = _SHARD_SUFFIX.sub("", path)
    return stem + ".info.json" if stem != path else sidecar_path(path)


def resolve_records(path, legacy_modalities=None) -> tuple:
    """Record files and their DatasetInfo for a --record path, a shard glob or an SSMA file.

    `legacy_modalities` (names or ModalitySpecs) overrides the modalities of a legacy file.
    """
    path = str(path)
    side = sidecar_path(path)
    if os.path.isfile(side) and not glob.has_magic(path):
        info = DatasetInfo.read(side)
        folder = os.path.dirname(side)
        files = [os.path.join(folder, f) for f in info.files]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise InputError(f"{side}: lists record file {missing[0]} which does not exist")
        info.files = files
        return files, info
    if glob.has_magic(path):
        files = sorted(glob.glob(path))
    else:
        files = [path] if os.path.isfile(path) else []
    if not files:
        raise InputError(f"no records found at {path} (nor a sidecar {side})")
    side = _sidecar_for_shard(files[0])
    if os.path.isfile(side):
        info = DatasetInfo.read(side)
        counts = dict(zip(map(os.path.basename, info.files), info.file_examples or []))
        if info.file_examples:
            info.file_examples = [counts.get(os.path.basename(f)) for f in files]
        if len(files) != len(info.files):
            known = info.file_examples and None not in info.file_examples
            info.num_examples = (sum(info.file_examples) if known else
                                 sum(1 for _ in tf.data.TFRecordDataset(files)))
        info.files = files
        return files, info
    return files, _legacy_info(files, legacy_modalities)


def _image_bytes(array, what, image_format):
    """PNG bytes, or the raw little-endian pixels in HWC order, of an RGB / HxW(x1) array."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{what}: images must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2 and not (array.ndim == 3 and array.shape[2] == 3):
        raise InputError(f"{what}: expected HxW, HxWx1 or HxWx3, got shape {array.shape}")
    if image_format == "raw":
        return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise InputError(f"{what}: PNG encoding failed")
    return buf.tobytes()


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(arrays, label, sources, image_format="png") -> bytes:
    """Serialise one sample: RGB / HxW(x1) numpy arrays per modality, optional uint8 label,
    stored as PNG or raw pixels (`image_format`, also written to the Example's "format")."""
    if not arrays:
        raise InputError("encode_example needs at least one modality")
    check_image_format(image_format)
    height, width = next(iter(arrays.values())).shape[:2]
    feature = {"height": _int_feature(height), "width": _int_feature(width),
               "format": _bytes_feature([image_format.encode()]),
               "modalities": _bytes_feature([n.encode() for n in arrays]),
               "source": _bytes_feature([str(s).encode() for s in sources])}
    for name, array in arrays.items():
        if array.shape[:2] != (height, width):
            raise InputError(f"modality {name!r} is {array.shape[:2]}, expected {(height, width)}")
        feature[f"modality/{name}"] = _bytes_feature(
            [_image_bytes(array, f"modality {name!r}", image_format)])
    if label is not None:
        label = np.asarray(label)
        one_channel = label.ndim == 2 or (label.ndim == 3 and label.shape[2] == 1)
        if label.dtype != np.uint8 or label.shape[:2] != (height, width) or not one_channel:
            raise InputError(f"label must be uint8 {(height, width)} with one channel, "
                             f"got {label.dtype} {label.shape}")
        feature["label"] = _bytes_feature([_image_bytes(label, "label", image_format)])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _decode_legacy(serialized, info):
    keys = {"height": tf.io.FixedLenFeature([], tf.int64),
            "width": tf.io.FixedLenFeature([], tf.int64),
            "label": tf.io.FixedLenFeature([], tf.string)}
    for i in range(len(info.modalities)):
        keys[f"modality{i + 1}"] = tf.io.FixedLenFeature([], tf.string)
    parsed = tf.io.parse_single_example(serialized, keys)
    h, w = tf.cast(parsed["height"], tf.int32), tf.cast(parsed["width"], tf.int32)
    out = {}
    for i, spec in enumerate(info.modalities):
        bgr = tf.reshape(tf.io.decode_raw(parsed[f"modality{i + 1}"], tf.uint8), [h, w, 3])
        out[spec.name] = tf.reverse(bgr, axis=[-1])
    out["label"] = tf.reshape(tf.io.decode_raw(parsed["label"], tf.uint8), [h, w, 1])
    return out


def decode_example(serialized, info) -> dict:
    """{name: uint8|uint16 [H,W,C], 'label': uint8 [H,W,1] if labeled}; tf ops only.

    The sidecar's `info.image_format` picks the decoder: PNG, or raw pixels (decode_raw +
    reshape to height x width x channels, no inflate).
    """
    if info.legacy:
        return _decode_legacy(serialized, info)
    keys = {f"modality/{m.name}": tf.io.FixedLenFeature([], tf.string) for m in info.modalities}
    if info.labeled:
        keys["label"] = tf.io.FixedLenFeature([], tf.string)
    raw = info.image_format == "raw"
    if raw:
        keys["height"] = tf.io.FixedLenFeature([], tf.int64)
        keys["width"] = tf.io.FixedLenFeature([], tf.int64)
    parsed = tf.io.parse_single_example(serialized, keys)

    def decode(data, channels, dtype):
        if not raw:
            return tf.io.decode_png(data, channels=channels, dtype=dtype)
        shape = tf.stack([tf.cast(parsed["height"], tf.int32), tf.cast(parsed["width"], tf.int32),
                          channels])
        return tf.reshape(tf.io.decode_raw(data, dtype, little_endian=True), shape)

    out = {m.name: decode(parsed[f"modality/{m.name}"], m.channels,
                          tf.uint16 if m.dtype == "uint16" else tf.uint8) for m in info.modalities}
    if info.labeled:
        out["label"] = decode(parsed["label"], 1, tf.uint8)
    return out
