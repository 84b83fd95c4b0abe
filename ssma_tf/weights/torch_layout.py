"""PyTorch -> Keras tensor layouts shared by the importers of torch-format weights, and the
rule for a first layer whose input channels differ from the pretrained one.

Layouts: Conv2d OIHW -> Conv2D HWIO; depthwise [C, 1, kh, kw] -> DepthwiseConv2D
[kh, kw, C, 1]; Linear [out, in] -> Dense [in, out]; a 1x1 conv used as a matrix
[O, I, 1, 1] -> [I, O]; BatchNorm weight/bias/running_mean/running_var -> gamma/beta/
moving_mean/moving_variance (`num_batches_tracked` has no counterpart and is dropped);
LayerNorm weight/bias -> gamma/beta.

First-layer channel rule (`fit_input_channels`): a pretrained kernel over C input
channels becomes one over N != C channels by giving every new input channel the sum of
the kernel over its C channels divided by N (= the mean over the C channels, times C/N).
An input whose N channels all carry the same image x then gives exactly the response the
pretrained layer gives to that image on all C channels (for N = 1: the kernel summed over
RGB, segmentation_models_pytorch's rule for one channel). N == C keeps the kernel as is.
"""

import numpy as np

from ssma_tf.errors import InputError

BATCH_NORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
              "running_var": "moving_variance"}
LAYER_NORM = {"weight": "gamma", "bias": "beta"}
DROPPED = "num_batches_tracked"


def conv_kernel(weight):
    """Conv2d weight OIHW -> Conv2D kernel HWIO."""
    return np.asarray(weight).transpose(2, 3, 1, 0)


def depthwise_kernel(weight):
    """Depthwise Conv2d weight [C, 1, kh, kw] -> DepthwiseConv2D kernel [kh, kw, C, 1]."""
    return np.asarray(weight).transpose(2, 3, 0, 1)


def dense_kernel(weight):
    """Linear weight [out, in] -> Dense kernel [in, out]."""
    return np.asarray(weight).T


def pointwise_matrix(weight):
    """A 1x1 Conv2d weight [O, I, 1, 1] used as a matrix -> [I, O]."""
    return np.asarray(weight)[:, :, 0, 0].T


def fit_input_channels(kernel, channels):
    """HWIO `kernel` over C input channels -> over `channels` (the module docstring's rule)."""
    kernel = np.asarray(kernel)
    if kernel.shape[2] == channels:
        return kernel
    summed = kernel.sum(axis=2, keepdims=True) / channels
    return np.repeat(summed, channels, axis=2)


def first_layer(mapping, path, kernel, variables, *names):
    """Put the model's first conv `kernel` (HWIO) at `path`, fitted to the model's input
    channels by `fit_input_channels` (with a note) when they differ."""
    variable = variables.get(path)
    if variable is not None and kernel.shape[2] != variable.shape[2] \
            and kernel.shape[:2] == tuple(variable.shape[:2]) \
            and kernel.shape[3] == variable.shape[3]:
        channels = int(variable.shape[2])
        mapping.notes.append(
            f"{path}: the pretrained kernel takes {kernel.shape[2]} input channels, the model "
            f"{channels}: each channel gets the kernel's sum over its {kernel.shape[2]} "
            f"channels / {channels}")
        kernel = fit_input_channels(kernel, channels)
    mapping.put(path, kernel, *names)


def find_prefix(names, anchors):
    """The shortest prefix p (e.g. "", "module.", "state_dict/") with p + anchor in `names`
    for one of `anchors`, or None."""
    found = [name[:-len(anchor)] for name in names for anchor in anchors
             if name.endswith(anchor)]
    return min(found, key=len) if found else None


def paths_by_leaf(variables):
    """{"<layer>/<variable>": full path} for the variables of a model (`variables_by_path`):
    functional layers are paths of their own, sub-layers sit under their owner's name."""
    leaves = {}
    for path in variables:
        leaf = "/".join(path.split("/")[-2:])
        leaves.setdefault(leaf, path)
    return leaves


def drop(mapping, names, note=None):
    """Mark source `names` as read and deliberately not imported (with a note)."""
    names = list(names)
    mapping.used.update(names)
    if note and names:
        mapping.notes.append(f"{note} ({len(names)} tensors)")


def require(condition, message):
    if not condition:
        raise InputError(message)
