"""Atomic file and folder writes: nothing appears under the final name until it is complete;
the temps a killed process left behind are removed by the next writer in that folder; one
process at a time owns a folder through a lock file."""

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import socket

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


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


def pid_alive(pid):
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder):
    """Delete the temp files and folders (temp_path names) in `folder` whose process is gone
    (killed mid-write); returns their paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        match = _TEMP_NAME.match(name)
        if not match or pid_alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(path)
    return removed


def write_failure(path, exc):
    """InputError for a failed write of `path`: the reason and, when the disk is full, the
    free space left there."""
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
        reason = f"no space left on device ({free_bytes(path) / 1e6:.1f} MB free)"
    return InputError(f"cannot write {path}: {reason}")


def free_bytes(path):
    """Free bytes on the disk holding `path` (or its nearest existing parent)."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


LOCK_NAME = ".lock"


class FolderLock:
    """`<folder>/.lock` naming the process (pid, host, start time) that owns the folder.

    acquire() creates it atomically; an existing lock of a live process is an InputError
    naming that process; a lock of a process that is gone from this host is stale and taken
    over. release() removes the lock if it is still ours."""

    def __init__(self, folder, what="run"):
        self.folder, self.what = folder, what
        self.path = os.path.join(folder, LOCK_NAME)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def _stale(self, holder):
        if holder is None:          # unreadable: a writer died between create and write
            return True
        return holder.get("host") == self.owner["host"] and not pid_alive(int(holder["pid"]))

    def acquire(self):
        make_folder(self.folder)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    raise InputError(
                        f"{self.folder} is in use by another {self.what} (pid {holder['pid']} "
                        f"on {holder['host']}, since {holder.get('started', '?')}); wait for "
                        f"it to end or choose another folder (if that process is gone, delete "
                        f"{self.path})") from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            started = datetime.datetime.now().isoformat(timespec="seconds")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({**self.owner, "started": started}, handle)
            return self
        raise InputError(f"{self.path}: cannot take the lock (another process keeps taking it)")

    def release(self):
        holder = self._holder()
        if holder and holder.get("pid") == self.owner["pid"] and \
                holder.get("host") == self.owner["host"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temp file beside `path`; on success rename it to `path`, else delete it."""
    make_folder(os.path.dirname(os.path.abspath(path)))
    tmp = temp_path(path)
    try:
        try:
            with open(tmp, mode, **open_kwargs) as handle:
                yield handle
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failure(path, exc) from None
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
