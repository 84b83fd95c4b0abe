"""One sample's modalities as the records store them, from decoded images or image files
(predict.py and the Python API read their inputs here)."""

import os

import numpy as np

from ssma_tf.data.convert import read_image
from ssma_tf.data.encodings import encode_modality, three_channel_uint8
from ssma_tf.errors import InputError


def stored_array(image, spec, where):
    """A decoded image (numpy) -> the stored array of `spec` [H, W, C]: uint8 images, uint16
    raw depth (an integer image is in stored units, a float one in metres). A 1-channel
    depth image becomes jet for a jet modality; hha needs precomputed HHA images."""
    image = np.asarray(image)
    try:
        if spec.encoding == "raw":
            array = encode_modality(image, "raw", depth_scale=spec.depth_scale)
        elif spec.encoding in ("jet", "hha") and (image.ndim == 2 or image.shape[-1] == 1):
            if spec.encoding == "hha":
                raise InputError("hha needs camera intrinsics: pass precomputed HHA images")
            array = encode_modality(image[..., 0] if image.ndim == 3 else image, "jet",
                                    depth_scale=spec.depth_scale)
        else:
            array = three_channel_uint8(image)
    except InputError as exc:
        raise InputError(f"{where}: {spec.name}: {exc}") from None
    return array.reshape(array.shape[:2] + (spec.channels,))


def read_sample(sources, specs, where, allow_8bit_depth=False):
    """{modality: stored array [H, W, C]} from {modality: file path or numpy image}; every
    modality must have the same height and width (InputError naming them otherwise). Files
    are checked against their modality's encoding (`convert.read_image`)."""
    arrays = {}
    for name, source in sources.items():
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            image = read_image(path, where, specs[name].encoding, allow_8bit_depth)
            arrays[name] = stored_array(image, specs[name], f"{where}: {path}")
        else:
            arrays[name] = stored_array(source, specs[name], where)
    sizes = {a.shape[:2] for a in arrays.values()}
    if len(sizes) > 1:
        raise InputError(f"{where}: the modalities differ in size: "
                         + ", ".join(f"{n} {a.shape[1]}x{a.shape[0]}" for n, a in arrays.items()))
    return arrays
