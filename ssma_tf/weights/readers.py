"""Read a weight file into {name: numpy array}; the format comes from the file's content.

Formats:
- "ssma_tf": a training checkpoint of this toolkit (a tf.train.Checkpoint with `model_variables`);
- "tf_checkpoint": any other TensorFlow checkpoint (TF1 `tf.train.Saver` files: a prefix with its
  `.index`), names as stored;
- "torch": a `torch.save` file (zip or legacy), nested dicts flattened with "/" between levels
  ("model_state_dict/student.encoder.patch_embed1.proj.weight");
- "safetensors": a `.safetensors` file (or a sharded set named by its `.index.json`);
- "keras_h5": an HDF5 weights file (Keras applications), names are the dataset paths
  ("conv1_conv/conv1_conv/kernel:0").
A folder is read as the checkpoint it holds, or as a Hugging Face model folder
(model.safetensors, its index, pytorch_model.bin or tf_model.h5).
"""

import dataclasses
import json
import os

import numpy as np

from ssma_tf.errors import InputError

FORMATS = ("ssma_tf", "tf_checkpoint", "torch", "safetensors", "keras_h5")
HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "tf_model.h5")
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8"   # pickle of torch's magic number


@dataclasses.dataclass
class Source:
    """A weight file read into memory: its path, format and tensors."""

    path: str
    format: str
    tensors: dict

    def names(self, prefix=""):
        """Sorted tensor names starting with `prefix`."""
        return sorted(name for name in self.tensors if name.startswith(prefix))


def _checkpoint_prefix(path):
    """The TF checkpoint prefix `path` names (a prefix, its .index, or a folder), or None."""
    import tensorflow as tf

    if os.path.isdir(path):
        return tf.train.latest_checkpoint(path)
    if path.endswith(".index") and os.path.isfile(path):
        return path[:-len(".index")]
    return path if os.path.isfile(path + ".index") else None


def _file_of(path):
    """The weight file inside a Hugging Face model folder, else `path` itself."""
    if os.path.isdir(path):
        for name in HF_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise InputError(f"{path}: the folder holds no checkpoint and none of "
                         f"{', '.join(HF_FILES)}")
    return path


def _sniff(path):
    """The format of the single file `path` from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the weight file ({exc.strerror or exc})") from None
    if path.endswith(".index.json"):
        return "safetensors"
    if head.startswith(HDF5_MAGIC):
        return "keras_h5"
    if head.startswith(ZIP_MAGIC) or head.startswith(TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1e8:
        return "safetensors"
    raise InputError(f"{path}: not a weight file this toolkit reads (a TF checkpoint, torch "
                     f".pth/.bin, .safetensors or Keras .h5)")


def detect_format(path):
    """(format, the file or checkpoint prefix to read) for `path`."""
    prefix = _checkpoint_prefix(path)
    if prefix:
        import tensorflow as tf

        names = [name for name, _ in tf.train.list_variables(prefix)]
        ours = any(name.startswith("model_variables/") for name in names)
        return ("ssma_tf" if ours else "tf_checkpoint"), prefix
    if not os.path.exists(path):
        raise InputError(f"{path}: no such weight file or checkpoint")
    target = _file_of(path)
    return _sniff(target), target


def _read_checkpoint(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _flatten(value, prefix, out):
    """Tensor leaves of nested dicts/lists, keyed by their path joined with "/"."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        out[prefix] = tensor.numpy()
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}/{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}/{index}" if prefix else str(index), out)


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise InputError(f"{path}: reading a torch file needs torch "
                         f"(pip install -e '.[torch]')") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # numpy scalars in training snapshots: allow exactly those types
        with torch.serialization.safe_globals([np._core.multiarray.scalar, np.dtype,
                                               type(np.dtype("float64"))]):
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise InputError(f"{path}: torch cannot read it as weights "
                                 f"({str(exc).splitlines()[0][:200]})") from None
    out = {}
    _flatten(data, "", out)
    return out


def _read_safetensors(path):
    from safetensors.numpy import load_file

    if path.endswith(".index.json"):
        with open(path) as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        out = {}
        for shard in shards:
            out.update(load_file(os.path.join(os.path.dirname(path), shard)))
        return out
    return load_file(path)


def _read_h5(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:
        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                out[name] = np.asarray(item)
        handle.visititems(visit)
    return out


READERS = {"ssma_tf": _read_checkpoint, "tf_checkpoint": _read_checkpoint,
           "torch": _read_torch, "safetensors": _read_safetensors, "keras_h5": _read_h5}


def read_source(path) -> Source:
    """Every tensor of the weight file or checkpoint at `path`."""
    fmt, target = detect_format(path)
    return Source(path=target, format=fmt, tensors=READERS[fmt](target))
