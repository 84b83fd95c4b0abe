"""Depth encodings: raw, jet, HHA on a synthetic room, hole filling, passthrough."""

import numpy as np
import pytest

from ssma_tf.data import encodings
from ssma_tf.errors import InputError

H, W = 48, 64
INTRINSICS = (50.0, 50.0, W / 2 - 0.5, H / 2 - 0.5)


def _room(pitch_deg=25.0, camera_height=1.5, wall_distance=4.0):
    """Depth (m) of a floor + a back wall seen by a camera pitched down; and which pixel hits
    what."""
    fx, fy, cx, cy = INTRINSICS
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((H, W))], -1)   # camera: y down
    p = np.deg2rad(pitch_deg)
    # world (y down, z forward) = camera rotated down by the pitch about x
    world_y = ray[..., 1] * np.cos(p) + ray[..., 2] * np.sin(p)
    world_z = -ray[..., 1] * np.sin(p) + ray[..., 2] * np.cos(p)
    with np.errstate(divide="ignore"):
        t_floor = np.where(world_y > 0, camera_height / world_y, np.inf)
        t_wall = wall_distance / world_z
    on_floor = t_floor < t_wall
    depth = np.minimum(t_floor, t_wall)          # ray z-component is 1 -> t is the depth
    world_height = camera_height - depth * world_y   # metres above the floor
    return depth.astype(np.float32), on_floor, world_height


def test_hha_on_floor_and_wall():
    depth, on_floor, world_height = _room()
    out = encodings.hha(depth, INTRINSICS)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # interior pixels, away from the floor/wall crease and the image border
    inner = np.zeros_like(on_floor)
    inner[4:-4, 4:-4] = True
    edge = np.abs(np.diff(on_floor.astype(int), axis=0, prepend=0)) > 0
    near_edge = np.zeros_like(edge)
    for dy in range(-4, 5):
        near_edge |= np.roll(edge, dy, axis=0)
    floor, wall = inner & on_floor & ~near_edge, inner & ~on_floor & ~near_edge
    assert floor.sum() > 100 and wall.sum() > 100
    angle = out[..., 2].astype(int)
    assert np.abs(angle[floor] - 38).max() <= 3          # normal parallel to gravity: 0 + 128 - 90
    assert np.abs(angle[wall] - 128).max() <= 3          # vertical wall: 90 + 128 - 90
    height = out[..., 1].astype(float)
    assert np.abs(height[floor]).max() <= 3               # the floor is the lowest point
    np.testing.assert_allclose(height[wall], world_height[wall] * 100, atol=4)
    column = height[:, W // 2][wall[:, W // 2]]
    assert np.all(np.diff(column) < 0)                    # higher in the image = higher up
    disparity = out[..., 0].astype(float)
    expected = np.clip(np.round(31000 / np.maximum(depth * 100, 100)), 0, 255)
    np.testing.assert_allclose(disparity[inner], expected[inner], atol=1)


def test_hha_keeps_holes_zero_and_needs_intrinsics():
    depth, _, _ = _room()
    depth[10:14, 20:30] = 0
    out = encodings.hha(depth, INTRINSICS)
    assert not out[10:14, 20:30].any()
    assert out[30:34, 20:30, 0].all() and out[30:34, 20:30, 2].all()   # disparity, angle > 0
    with pytest.raises(InputError, match="intrinsics"):
        encodings.encode_modality((depth * 1000).astype(np.uint16), "hha")


def test_jet_on_a_ramp_goes_blue_to_red():
    ramp = np.tile(np.linspace(0, 10, 256, dtype=np.float32), (4, 1))
    out = encodings.jet(ramp)
    assert out.shape == (4, 256, 3) and out.dtype == np.uint8
    r, g, b = (out[0, :, i].astype(int) for i in range(3))
    assert b[0] > 100 and r[0] == 0                       # far end blue ...
    assert r[-1] > 100 and b[-1] == 0                     # ... near end red (RGB order)
    assert g[128] > 200                                   # green in the middle
    np.testing.assert_array_equal(encodings.jet(ramp, max_depth=20)[0, -1], out[0, 128])


def test_raw_keeps_16_bit_and_converts_metres():
    depth = np.array([[0, 1, 65535]], np.uint16)
    np.testing.assert_array_equal(encodings.encode_modality(depth, "raw"), depth)
    metres = np.array([[0.0, 1.2345, np.nan]], np.float32)
    np.testing.assert_array_equal(encodings.encode_modality(metres, "raw", depth_scale=0.001),
                                  [[0, 1234, 0]])
    with pytest.raises(InputError, match="single channel"):
        encodings.encode_modality(
            np.random.default_rng(0).integers(0, 9, (4, 4, 3), np.uint16), "raw")


def test_fill_holes_fills_small_holes_and_keeps_values():
    depth = np.full((H, W), 2.0, np.float32)
    depth[20:23, 30:33] = 0                               # small hole
    depth[::7, ::5] = 0                                   # sparse dropouts
    filled = encodings.fill_holes(depth)
    assert (filled > 0).all()
    np.testing.assert_allclose(filled, 2.0, atol=1e-3)
    raw = encodings.encode_modality((depth * 1000).astype(np.uint16), "raw", fill=True)
    assert raw.dtype == np.uint16 and (np.abs(raw.astype(int) - 2000) <= 1).all()


def test_passthrough_and_unknown_encoding():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = encodings.encode_modality(grey, "image")
    assert out.shape == (3, 4, 3) and (out[..., 2] == grey).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert encodings.encode_modality(rgba, "color").shape == (3, 4, 3)
    assert encodings.modality_spec("depth", "raw", 0.0002).dtype == "uint16"
    assert encodings.modality_spec("hha", "hha").channels == 3
    with pytest.raises(InputError, match="unknown encoding 'sepia'"):
        encodings.encode_modality(grey, "sepia")
