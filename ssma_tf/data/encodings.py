"""Modality encodings computed by the converter (numpy/cv2): raw depth, jet, HHA, passthrough.

Inputs are decoded images in RGB order (see convert.read_image). Depth may be uint8/uint16
(units of `depth_scale` metres) or float (metres); 0 means "no reading" and stays 0.
"""

import cv2
import numpy as np

from ssma_tf.data.schema import ENCODINGS, ModalitySpec
from ssma_tf.errors import InputError

_DIAMOND5 = np.array([[0, 0, 1, 0, 0],
                      [0, 1, 1, 1, 0],
                      [1, 1, 1, 1, 1],
                      [0, 1, 1, 1, 0],
                      [0, 0, 1, 0, 0]], np.uint8)


def modality_spec(name, encoding, depth_scale=0.001) -> ModalitySpec:
    """The stored spec of a modality written with `encoding`."""
    if encoding == "raw":
        return ModalitySpec(name, "raw", 1, "uint16", depth_scale)
    return ModalitySpec(name, encoding, 3, "uint8")


def three_channel_uint8(image) -> np.ndarray:
    """Passthrough for 'color'/'image': grey -> 3 channels, alpha dropped, 16-bit -> 8-bit."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise InputError(f"expected an 8- or 16-bit image, got {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2)
    if image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise InputError(f"expected 1, 3 or 4 channels, got {image.shape[2]}")


def _single_channel(depth):
    if depth.ndim == 3:
        if depth.shape[2] > 1 and not all(np.array_equal(depth[..., 0], depth[..., c])
                                          for c in range(1, depth.shape[2])):
            raise InputError(f"depth must be single channel, got {depth.shape[2]} "
                             "different channels")
        depth = depth[..., 0]
    return depth


def depth_metres(depth, depth_scale) -> np.ndarray:
    """float32 metres from an integer depth image (units of depth_scale) or a float one (metres)."""
    depth = _single_channel(depth)
    if np.issubdtype(depth.dtype, np.floating):
        return np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    if depth.dtype not in (np.uint8, np.uint16):
        raise InputError(f"depth must be uint8, uint16 or float, got {depth.dtype}")
    return depth.astype(np.float32) * np.float32(depth_scale)


def raw_depth(depth_m, depth_scale) -> np.ndarray:
    """uint16 depth in units of depth_scale (rounded, saturating) from metres."""
    return np.clip(np.round(depth_m / depth_scale), 0, 65535).astype(np.uint16)


def fill_holes(depth_m, max_depth=100.0) -> np.ndarray:
    """Fast depth completion in the spirit of ip_basic's fill_in_fast (metres in, metres out).

    Valid depths (> 0.1 m) are inverted so near points win the max-filters, then: diamond
    dilation, closing, filling the remaining holes from a wider dilation, median and bilateral
    smoothing, and inversion back. Pixels still empty stay 0.
    """
    d = np.minimum(depth_m.astype(np.float32), max_depth)
    valid = d > 0.1
    d[valid] = max_depth - d[valid]
    d[~valid] = 0
    d = cv2.dilate(d, _DIAMOND5)
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    empty = d < 0.1
    d[empty] = cv2.dilate(d, np.ones((7, 7), np.uint8))[empty]
    d = cv2.medianBlur(d, 5)
    d = cv2.bilateralFilter(d, 5, 1.5, 2.0)
    valid = d > 0.1
    d[valid] = max_depth - d[valid]
    d[~valid] = 0
    return d


def jet(depth_m, max_depth=None) -> np.ndarray:
    """Depth scaled to 0..255 (by max_depth, default the image's maximum) through
    COLORMAP_JET, RGB."""
    top = float(max_depth if max_depth else depth_m.max())
    scaled = np.clip(depth_m / top * 255.0, 0, 255) if top > 0 else np.zeros_like(depth_m)
    bgr = cv2.applyColorMap(np.round(scaled).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _point_cloud_cm(depth_m, intrinsics):
    """Camera-frame points in cm with x right, y UP, z forward."""
    fx, fy, cx, cy = intrinsics
    h, w = depth_m.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    z = depth_m.astype(np.float64) * 100.0
    return np.stack([(u - cx) * z / fx, -(v - cy) * z / fy, z], axis=-1)


def surface_normals(points, valid, window=5) -> np.ndarray:
    """Unit normals from a least-squares plane over a window x window support, facing the camera."""
    m = valid.astype(np.float64)
    box = lambda a: cv2.boxFilter(a, -1, (window, window), normalize=False,  # noqa: E731
                                  borderType=cv2.BORDER_CONSTANT)
    count = np.maximum(box(m), 1.0)
    p = points * m[..., None]
    mean = np.stack([box(p[..., i]) for i in range(3)], -1) / count[..., None]
    cov = np.empty(points.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[..., i, j] = cov[..., j, i] = (box(p[..., i] * points[..., j]) / count
                                               - mean[..., i] * mean[..., j])
    normals = np.linalg.eigh(cov)[1][..., 0]          # eigenvector of the smallest eigenvalue
    towards_camera = np.sum(normals * points, axis=-1) > 0
    normals[towards_camera] *= -1
    normals[~valid] = 0
    return normals


def estimate_gravity(normals, valid, thresholds_deg=(45.0, 15.0), iterations=5) -> np.ndarray:
    """Gravity-aligned 'up' direction: most parallel to floor-like normals, perpendicular to
    walls."""
    n = normals[valid]
    g = np.array([0.0, 1.0, 0.0])
    for threshold in thresholds_deg:
        cos_t, sin_t = np.cos(np.deg2rad(threshold)), np.sin(np.deg2rad(threshold))
        for _ in range(iterations):
            cos = n @ g
            parallel, perpendicular = n[np.abs(cos) > cos_t], n[np.abs(cos) < sin_t]
            if len(parallel) == 0:
                break
            scatter = perpendicular.T @ perpendicular - parallel.T @ parallel
            new = np.linalg.eigh(scatter)[1][:, 0]
            g = new if new @ g >= 0 else -new
    return g


def hha(depth_m, intrinsics, window=5) -> np.ndarray:
    """HHA (Gupta et al. 2014), uint8 RGB = (disparity, height above lowest point cm, angle).

    Disparity = 31000 / max(z_cm, 100); height = projection on the estimated gravity direction
    minus its minimum; angle = degrees between normal and gravity + 128 - 90. Holes stay 0.
    """
    if intrinsics is None or len(intrinsics) != 4:
        raise InputError("hha needs camera intrinsics fx,fy,cx,cy (--intrinsics)")
    valid = depth_m > 0
    out = np.zeros(depth_m.shape + (3,), np.uint8)
    if not valid.any():
        return out
    points = _point_cloud_cm(depth_m, intrinsics)
    normals = surface_normals(points, valid, window)
    up = estimate_gravity(normals, np.linalg.norm(normals, axis=-1) > 0.5)
    height = points @ up
    height -= height[valid].min()
    angle = np.degrees(np.arccos(np.clip(normals @ up, -1.0, 1.0)))
    channels = np.stack([31000.0 / np.maximum(points[..., 2], 100.0), height, angle + 128 - 90], -1)
    out[valid] = np.clip(np.round(channels[valid]), 0, 255).astype(np.uint8)
    return out


def encode_modality(image, encoding, *, depth_scale=0.001, intrinsics=None,
                    fill=False, jet_max_depth=None) -> np.ndarray:
    """Turn a decoded RGB / depth image into the stored array for `encoding`."""
    if encoding not in ENCODINGS:
        raise InputError(f"unknown encoding {encoding!r}, expected one of {', '.join(ENCODINGS)}")
    if encoding in ("color", "image"):
        return three_channel_uint8(image)
    if encoding == "hha" and (intrinsics is None or len(intrinsics) != 4):
        raise InputError("hha needs camera intrinsics fx,fy,cx,cy (--intrinsics)")
    if encoding == "raw" and not fill and image.dtype in (np.uint8, np.uint16):
        return _single_channel(image).astype(np.uint16)
    depth = depth_metres(image, depth_scale)
    if fill:
        depth = fill_holes(depth)
    if encoding == "raw":
        return raw_depth(depth, depth_scale)
    if encoding == "jet":
        return jet(depth, jet_max_depth)
    return hha(depth, intrinsics)
