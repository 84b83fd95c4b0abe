"""Atomic file and folder writes: nothing appears under the final name until it is complete."""

import contextlib
import json
import os
import shutil

import cv2
import numpy as np

from ssma_tf.errors import InputError


def make_folder(path):
    """os.makedirs(path, exist_ok=True), or an InputError naming the folder when it cannot be
    made (a file in the way, no permission, read-only disk)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {path}: {exc.strerror or exc}") from None


def temp_path(path):
    """The hidden per-process temp name beside `path` that an atomic write renames."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temp file beside `path`; on success rename it to `path`, else delete it."""
    make_folder(os.path.dirname(os.path.abspath(path)))
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success replace `path` with it, else delete it."""
    make_folder(os.path.dirname(os.path.abspath(path)))
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_png(path, image):
    """Atomically write a uint8/uint16 [H, W] or RGB [H, W, 3] image as PNG (BGR on disk),
    creating its folder."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise InputError(f"{path}: cannot encode PNG")
    with atomic_write(str(path), "wb") as handle:
        handle.write(encoded.tobytes())


def read_json(path):
    """The JSON value in `path`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
