"""Checkpoint saves that are all-or-nothing from the user's view: a failed save (disk full,
I/O error) removes what it wrote and is an InputError naming the folder, the space needed
and the checkpoint that is still intact; a run starts by removing the partial saves (the
`ckpt-N_temp/` folders TensorFlow writes before renaming) and temp files of killed runs."""

import glob
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.io_utils import free_bytes, remove_stale_temps


def remove_partial_saves(folder, keep=()):
    """Delete `folder`'s unfinished saves: `*_temp` folders, and files of checkpoints that
    the `checkpoint` state file does not list (and that are not in `keep`)."""
    state = tf.train.get_checkpoint_state(folder)
    listed = set(keep)
    if state is not None:
        listed |= {os.path.basename(p) for p in state.all_model_checkpoint_paths}
    removed = remove_stale_temps(folder)
    for path in glob.glob(os.path.join(folder, "ckpt-*")):
        name = os.path.basename(path)
        if name.endswith("_temp") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif name.split(".", 1)[0] not in listed and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def checkpoint_bytes(prefix, items):
    """Bytes one save needs: the size of checkpoint `prefix` when there is one, else the
    Keras models' weights in `items`."""
    if prefix:
        return sum(os.path.getsize(p) for p in glob.glob(prefix + ".*"))
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for m in items.values()
               if isinstance(m, keras.Model) for w in m.weights)


def save(manager, step, items):
    """manager.save at `step`; on failure the partial save is removed and an InputError says
    why, how much space a save needs and which checkpoint is intact."""
    folder = manager.directory
    previous = manager.latest_checkpoint
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as exc:
        remove_partial_saves(folder)
        text = str(exc)
        full = isinstance(exc, tf.errors.ResourceExhaustedError) or "No space left" in text
        reason = "no space left on device" if full else text.strip().splitlines()[-1][:200]
        needed = checkpoint_bytes(previous, items) / 1e6
        kept = f"checkpoint {previous} is intact" if previous else "no checkpoint saved yet"
        raise InputError(f"cannot save checkpoint {step} in {folder}: {reason} (a checkpoint "
                         f"needs about {needed:.1f} MB, {free_bytes(folder) / 1e6:.1f} MB free);"
                         f" {kept}") from None
