"""List file -> sharded TFRecords + JSON sidecar, in parallel and atomically.

Each list line is read, checked and encoded in a worker process (cv2/numpy; PNG or raw
pixels, see schema.encode_example); the parent
writes round-robin into one TFRecordWriter per shard under temporary names and renames
everything, sidecar last, only once every sample converted. Any error, Ctrl-C or SIGTERM
removes the temps (the workers ignore Ctrl-C, so that the pool can close); the temps of a
killed converter are removed by the next one writing to that folder. An output path equal
to an input (the list file, an image) is refused unless `overwrite`.

Images are checked against their column (read_image): a raw-depth column refuses 8-bit
and JPEG images unless allowed, a colour column refuses 16-bit and one-channel images, and
JPEGs are turned upright by their EXIF orientation.
"""

import collections
import dataclasses
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading

import cv2
import numpy as np
import tensorflow as tf
from absl import logging

from ssma_tf.data import encodings, schema
from ssma_tf.data.listfile import read_list
from ssma_tf.datasets.registry import get_dataset
from ssma_tf.errors import InputError
from ssma_tf.io_utils import make_folder, remove_stale_temps, temp_path, write_failure

DEFAULT_ENCODINGS = {"rgb": "color", "depth": "raw"}


def parse_encodings(text, modalities) -> dict:
    """'depth=raw,hha=hha' -> encoding per modality (defaults: rgb color, depth raw, else image)."""
    chosen = {m: DEFAULT_ENCODINGS.get(m, "image") for m in modalities}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, sep, encoding = item.partition("=")
        if not sep or name not in chosen:
            raise InputError(f"--encodings: {item!r} must be MODALITY=ENCODING with MODALITY "
                             f"one of {list(modalities)}")
        if encoding not in schema.ENCODINGS:
            raise InputError(f"--encodings: unknown encoding {encoding!r} for {name!r}, "
                             f"expected one of {', '.join(schema.ENCODINGS)}")
        chosen[name] = encoding
    return chosen


def parse_intrinsics(values):
    """fx,fy,cx,cy as four floats (a 'a,b,c,d' string or a sequence), or None."""
    if values is None or values == "":
        return None
    items = values.split(",") if isinstance(values, str) else list(values)
    try:
        floats = tuple(float(v) for v in items)
    except ValueError as e:
        raise InputError(f"--intrinsics: expected four numbers fx,fy,cx,cy, got {values!r}") from e
    if len(floats) != 4:
        raise InputError(f"--intrinsics: expected four numbers fx,fy,cx,cy, got {len(floats)}")
    return floats


def load_label_map(name_or_path, ignore_label=255) -> np.ndarray:
    """uint8[256] raw id -> train id, from a JSON file {"raw": train} (unlisted ids -> ignore_label)
    or from ssma_tf.datasets.registry.get_dataset(NAME).id_map."""
    if name_or_path.endswith(".json") or os.path.isfile(name_or_path):
        try:
            with open(name_or_path) as f:
                mapping = json.load(f)
            lookup = np.full(256, ignore_label, np.uint8)
            for raw, train in mapping.items():
                if not (0 <= int(raw) <= 255 and isinstance(train, int) and 0 <= train <= 255):
                    raise ValueError(f"entry {raw!r}: {train!r} is not 0..255 -> 0..255")
                lookup[int(raw)] = train
            return lookup
        except (OSError, ValueError, AttributeError) as e:
            raise InputError(f"--label-map {name_or_path}: {e}") from e
    try:
        id_map = get_dataset(name_or_path).id_map
    except InputError as e:
        raise InputError(f"--label-map {name_or_path!r}: no such JSON file, and {e}") from None
    if id_map is None:
        raise InputError(f"--label-map {name_or_path!r}: this dataset needs no id map "
                         "(id_map is None)")
    return np.asarray(id_map, np.uint8)


@dataclasses.dataclass(frozen=True)
class _Job:
    list_path: str
    modalities: tuple
    encodings: dict
    labeled: bool
    depth_scale: float
    intrinsics: tuple | None
    fill_holes: bool
    jet_max_depth: float | None
    num_classes: int | None
    ignore_label: int
    label_map: np.ndarray | None
    image_format: str
    allow_8bit_depth: bool = False


JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(path):
    """Whether the file starts like a JPEG (whatever its name says)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(3) == JPEG_MAGIC
    except OSError:
        return False


def check_column(image, path, where, encoding, jpeg, allow_8bit_depth=False):
    """InputError when `image` cannot be what a column of `encoding` holds: raw depth in an
    8-bit or JPEG image (values would be read as 0-0.25 m; allowed with allow_8bit_depth),
    colour as 16-bit or one-channel data (a depth map would become an almost black image)."""
    if encoding == "raw" and (jpeg or image.dtype == np.uint8) and not allow_8bit_depth:
        kind = "a JPEG" if jpeg else "an 8-bit image"
        raise InputError(f"{where}: raw depth {path} is {kind}; raw depth must be a 16-bit PNG "
                         f"in stored units (--allow-8bit-depth to accept it as it is)")
    if encoding == "color":
        if image.dtype != np.uint8:
            raise InputError(f"{where}: colour image {path} is {image.dtype} (16-bit depth in "
                             f"a colour column?); give an 8-bit RGB image")
        if image.ndim == 2 or image.shape[2] == 1:
            raise InputError(f"{where}: colour image {path} has one channel (depth or a "
                             f"label in a colour column?); give an RGB image")


def read_image(path, where, encoding=None, allow_8bit_depth=False) -> np.ndarray:
    """Image as stored (any depth/channels), colour converted to RGB(A); a JPEG turned
    upright by its EXIF orientation. With `encoding` (its column's), checked to fit it
    (check_column). InputError if unreadable."""
    jpeg = is_jpeg(path)
    # every imread flag but IMREAD_UNCHANGED applies the EXIF orientation
    image = cv2.imread(path, cv2.IMREAD_ANYCOLOR if jpeg else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{where}: cannot read image {path} (missing, unreadable or corrupt)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if encoding is not None:
        check_column(image, path, where, encoding, jpeg, allow_8bit_depth)
    return image


def _read_label(path, where, job):
    label = read_image(path, where)
    if label.ndim == 3 and label.shape[2] > 1:
        raise InputError(f"{where}: label {path} must be one channel of class ids, it has "
                         f"{label.shape[2]} (colour or palette PNG? map it to ids first)")
    label = label.reshape(label.shape[:2])
    if label.dtype != np.uint8:
        if not np.issubdtype(label.dtype, np.integer) or label.max() > 255:
            raise InputError(f"{where}: label {path} must hold ids 0..255 ({label.dtype}, "
                             f"max {label.max()})")
        label = label.astype(np.uint8)
    if job.label_map is not None:
        label = job.label_map[label]
    if job.num_classes is not None:
        bad = (label >= job.num_classes) & (label != job.ignore_label)
        if bad.any():
            raise InputError(f"{where}: label {path} has ids "
                             f"{sorted(set(label[bad].tolist()))[:10]} >= num_classes "
                             f"{job.num_classes} that are not the ignore label "
                             f"{job.ignore_label} ({int(bad.sum())} pixels)")
    return label


def _encode_entry(entry, job):
    """(serialized Example, label histogram or None, (height, width)) for one list entry."""
    where = f"{job.list_path}:{entry.line}"
    arrays, first = {}, None
    for name, path in zip(job.modalities, entry.paths):
        image = read_image(path, where, job.encodings[name], job.allow_8bit_depth)
        if first is None:
            first = (path, image.shape[:2])
        elif image.shape[:2] != first[1]:
            raise InputError(f"{where}: {name} {path} is {image.shape[1]}x{image.shape[0]} but "
                             f"{first[0]} is {first[1][1]}x{first[1][0]} (WxH); "
                             "all columns must match")
        try:
            arrays[name] = encodings.encode_modality(
                image, job.encodings[name], depth_scale=job.depth_scale, intrinsics=job.intrinsics,
                fill=job.fill_holes, jet_max_depth=job.jet_max_depth)
        except InputError as e:
            raise InputError(f"{where}: {name} {path}: {e}") from e
    label, histogram = None, None
    if job.labeled:
        path = entry.paths[-1]
        label = _read_label(path, where, job)
        if label.shape != first[1]:
            raise InputError(f"{where}: label {path} is {label.shape[1]}x{label.shape[0]} but "
                             f"{first[0]} is {first[1][1]}x{first[1][0]} (WxH)")
        histogram = np.bincount(label.ravel(), minlength=256)
    return (schema.encode_example(arrays, label, entry.paths, job.image_format), histogram,
            first[1])


_WORKER_JOB = None


def _init_worker(job):
    global _WORKER_JOB
    _WORKER_JOB = job
    for number in (signal.SIGINT, signal.SIGTERM):  # the parent stops the pool on these
        signal.signal(number, signal.SIG_IGN)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def check_outputs(outputs, list_path, entries):
    """InputError when an output path is the list file or an image it names."""
    images = {os.path.realpath(p) for e in entries for p in e.paths}
    for path in outputs:
        real = os.path.realpath(path)
        if real == os.path.realpath(list_path) or real in images:
            what = "the list file" if real not in images else "an image the list names"
            raise InputError(f"output {path} is {what}: it would be overwritten; choose "
                             f"another --record or pass --overwrite")


def _encode_in_worker(entry):
    return _encode_entry(entry, _WORKER_JOB)


class _Progress:
    """A \\r line on a terminal, else an absl log line every 10%."""

    def __init__(self, total):
        self.total, self.tty, self.last = total, sys.stderr.isatty(), -1

    def update(self, done):
        if self.tty:
            sys.stderr.write(f"\rconverted {done}/{self.total}"
                             + ("\n" if done == self.total else ""))
            sys.stderr.flush()
        elif done * 10 // self.total > self.last:
            self.last = done * 10 // self.total
            logging.info("converted %d/%d", done, self.total)


def _in_order(pool, entries, window):
    """Worker results in list order with at most `window` samples in flight, so that after
    an error (raised here by .get()) only those few remain to finish before the pool closes."""
    entries = iter(entries)
    pending = collections.deque(pool.apply_async(_encode_in_worker, (entry,))
                                for entry in itertools.islice(entries, window))
    while pending:
        result = pending.popleft().get()
        for entry in itertools.islice(entries, 1):
            pending.append(pool.apply_async(_encode_in_worker, (entry,)))
        yield result


def convert(list_path, record_path, *, modalities=("rgb", "depth"), unlabeled=False,
            encodings_by_name=None, depth_scale=0.001, intrinsics=None, fill_holes=False,
            jet_max_depth=None, num_classes=None, ignore_label=255, label_map=None,
            num_shards=1, workers=None, image_format="png", command="", overwrite=False,
            allow_8bit_depth=False) -> schema.DatasetInfo:
    """Convert an SSMA list file to TFRecords at record_path (+ shards, + sidecar); return the info.

    image_format: "png" (compact) or "raw" (uncompressed pixels: ~3x larger, much faster to
    decode in the training pipeline). overwrite: allow an output path that is an input;
    allow_8bit_depth: accept 8-bit / JPEG images in raw-depth columns.
    encodings_by_name: {modality: encoding} or a 'depth=raw,...' string; label_map: a dataset
    name, a JSON file or a uint8[256] array. Raises InputError (naming list file, line and path)
    on bad input, leaving nothing behind.
    """
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities) or "label" in modalities:
        raise InputError(f"--modalities: need one or more distinct names other than 'label', "
                         f"got {list(modalities)}")
    if isinstance(encodings_by_name, dict):
        unknown = set(encodings_by_name) - set(modalities)
        if unknown:
            raise InputError(f"--encodings: {sorted(unknown)} not among modalities "
                             f"{list(modalities)}")
        encodings_by_name = ",".join(f"{k}={v}" for k, v in encodings_by_name.items())
    chosen = parse_encodings(encodings_by_name, modalities)
    intrinsics = parse_intrinsics(intrinsics)
    try:
        schema.check_image_format(image_format)
    except InputError as e:
        raise InputError(f"--image-format: {e}") from e
    needs = [m for m, e in chosen.items() if e == "hha"]
    if needs and intrinsics is None:
        raise InputError(f"modality {needs[0]!r} uses encoding hha, which needs camera intrinsics: "
                         f"pass --intrinsics fx,fy,cx,cy")
    if isinstance(label_map, str):
        label_map = load_label_map(label_map, ignore_label)
    if unlabeled and (label_map is not None or num_classes is not None):
        raise InputError("--label-map and --num-classes need labels; drop them or --unlabeled")
    shards = schema.shard_paths(record_path, num_shards)
    job = _Job(str(list_path), modalities, chosen, not unlabeled, float(depth_scale), intrinsics,
               bool(fill_holes), jet_max_depth, num_classes, int(ignore_label),
               None if label_map is None else np.asarray(label_map, np.uint8), image_format,
               bool(allow_8bit_depth))
    entries = read_list(list_path, list(modalities) + ([] if unlabeled else ["label"]))
    if not overwrite:
        check_outputs(shards + [schema.sidecar_path(record_path)], list_path, entries)
    workers = min(workers or os.cpu_count() or 1, len(entries))

    folder = os.path.dirname(os.path.abspath(record_path))
    make_folder(folder)
    for path in remove_stale_temps(folder):
        logging.info("removed %s, left by a converter that was killed", path)
    temps = [temp_path(p) for p in shards]
    histogram = np.zeros(256, np.int64)
    counts, sizes = [0] * num_shards, []
    progress = _Progress(len(entries))
    pool, writers, renamed = None, [], []
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        if workers > 1:
            pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (job,))
            results = _in_order(pool, entries, window=4 * workers)
        else:
            results = (_encode_entry(e, job) for e in entries)
        for i, (serialized, hist, size) in enumerate(results):
            try:
                writers[i % num_shards].write(serialized)
            except (OSError, tf.errors.OpError) as exc:
                raise write_failure(shards[i % num_shards], exc) from None
            if hist is not None:
                histogram += hist
            counts[i % num_shards] += 1
            sizes.append(size)
            progress.update(i + 1)
        try:
            for w in writers:
                w.close()
        except (OSError, tf.errors.OpError) as exc:
            raise write_failure(record_path, exc) from None
        for temp, final in zip(temps, shards):
            os.replace(temp, final)
            renamed.append(final)
        info = schema.DatasetInfo(
            modalities=[encodings.modality_spec(m, chosen[m], depth_scale) for m in modalities],
            labeled=not unlabeled, num_examples=len(entries),
            files=[os.path.basename(p) for p in shards], num_classes=num_classes,
            ignore_label=int(ignore_label),
            class_histogram=None if unlabeled else histogram.tolist(), command=command,
            image_format=image_format, file_examples=counts,
            image_size={"min": np.min(sizes, axis=0).tolist(),
                        "max": np.max(sizes, axis=0).tolist()})
        info.write(schema.sidecar_path(record_path))
    except BaseException:
        for w in writers:
            w.close()
        for path in temps + renamed:
            if os.path.exists(path):
                os.remove(path)
        raise
    finally:
        if pool is not None:  # close + join: terminate() can deadlock in a forked TF process
            pool.close()
            pool.join()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    logging.info("wrote %d examples to %s (%d shard%s)", len(entries), record_path, num_shards,
                 "s" if num_shards > 1 else "")
    return info
