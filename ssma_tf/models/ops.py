"""Backend-agnostic resize ops shared by the model families (no layers, no weights).

XLA forms: XLA:CPU (jit_compile=True, and every jax.jit) runs TF's native bilinear resize
(and a depthwise conv, see mit.MixFFN) far slower than TF's own kernels, so the models
that care take an explicit `xla_friendly` argument and then trace matmul forms instead
(slower without XLA). Under the jax backend everything is XLA-compiled, so the XLA forms
are always used there (`use_xla_forms`).
"""

import keras
from keras import ops


def use_xla_forms(xla_friendly=False) -> bool:
    """Whether to trace the XLA-friendly op forms: asked for, or the jax backend."""
    return bool(xla_friendly) or keras.backend.backend() == "jax"


def _interpolation_matrix(out_size, in_size, align_corners, dtype):
    """(out x in) matrix of PyTorch bilinear weights along one axis (two non-zeros a row)."""
    out_pos = ops.cast(ops.arange(out_size), "float32")
    in_f = ops.cast(in_size, "float32")
    if align_corners:
        scale = (in_f - 1.0) / ops.maximum(ops.cast(out_size, "float32") - 1.0, 1.0)
        src = out_pos * scale
    else:
        src = (out_pos + 0.5) * (in_f / ops.cast(out_size, "float32")) - 0.5
        src = ops.clip(src, 0.0, in_f - 1.0)
    i0 = ops.cast(ops.floor(src), "int32")
    i1 = ops.minimum(i0 + 1, ops.cast(in_size, "int32") - 1)
    frac = ops.cast(src - ops.cast(i0, "float32"), dtype)[:, None]
    return (ops.one_hot(i0, in_size, dtype=dtype) * (1.0 - frac)
            + ops.one_hot(i1, in_size, dtype=dtype) * frac)


def bilinear_resize(x, size, align_corners=False):
    """Bilinear resize of NHWC `x` to `size` (ints or scalar tensors), PyTorch semantics.

    keras.ops.image.resize has no align_corners and needs static sizes; this takes both.
    It is two matmuls on the channels-first view, rows @ x @ cols^T: XLA-friendly, and its
    gradient is matmuls too (a gather's gradient is a slow scatter on CPU).
    """
    shape = ops.shape(x)
    rows = _interpolation_matrix(size[0], shape[1], align_corners, x.dtype)
    cols = _interpolation_matrix(size[1], shape[2], align_corners, x.dtype)
    y = ops.matmul(ops.matmul(rows, ops.transpose(x, (0, 3, 1, 2))), ops.transpose(cols))
    return ops.transpose(y, (0, 2, 3, 1))


def resize_half_pixel(x, size, xla_friendly=False):
    """Bilinear resize with align_corners=False: the backend's native op when the sizes are
    static (TF ResizeBilinear: 5-10x faster than the matmuls) and not tracing for XLA
    (`use_xla_forms(xla_friendly)`: that op is slow there), else bilinear_resize."""
    static = [d for d in (*size, *x.shape[1:3]) if isinstance(d, int)]
    if len(static) == 4 and not use_xla_forms(xla_friendly):
        return ops.image.resize(x, tuple(size), interpolation="bilinear")
    return bilinear_resize(x, size)
