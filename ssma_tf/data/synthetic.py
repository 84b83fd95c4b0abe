"""Procedural RGB-D room scenes: the embedded default dataset, built so that fusion matters.

A camera looks at a floor plane meeting a (slightly tilted) wall, 0.5-8 m away. Objects:

    id  class    visible in   how
    0   floor    both         ramp in depth, desaturated colour
    1   wall     both         flat in depth, another desaturated colour
    2   marking  RGB only     saturated paint on the floor; depth is exactly the floor's
    3   relief   depth only   raised patch (wall or floor); colour/texture exactly the surface's
    4   box      both         saturated front face standing on the floor, raised
    5   ball     both         saturated shaded disc, spherical depth bump
    6   pit      depth only   sunken patch in the floor; colour/texture exactly the floor's

Colour alone cannot tell marking from box (same paint and shape distribution) nor relief/pit
from their surface; depth alone cannot tell marking from floor nor box from relief. Random
illumination and texture apply to every pixel alike. The sensor adds depth noise growing with
distance, zero-valued holes (blobs, speckle, depth edges) and 8-bit colour noise. Labels mark
class boundaries with 255 (ignore).

Files: ``<out>/<split>/{rgb,depth,label}/NNNNNN.png`` (8-bit RGB, 16-bit depth in mm, uint8
train ids) and list files ``<split>.txt`` in SSMA format (``rgb depth label``, paths relative
to the list file's folder; ``unlabeled.txt`` has no label column).
CLI: ``python -m ssma_tf.data.synthetic --out DIR [--num-train N ...]``.
"""

import argparse
import colorsys
import json
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

from ssma_tf.cli import guarded
from ssma_tf.errors import InputError
from ssma_tf.io_utils import atomic_dir, write_png

CLASS_NAMES = ("floor", "wall", "marking", "relief", "box", "ball", "pit")
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_LABEL = 255
PALETTE = np.array(
    [[128, 64, 128], [70, 70, 70], [250, 170, 30], [107, 142, 35],
     [0, 0, 142], [220, 20, 60], [152, 251, 152]], dtype=np.uint8)
FLOOR, WALL, MARKING, RELIEF, BOX, BALL, PIT = range(NUM_CLASSES)

MIN_DEPTH_M, MAX_DEPTH_M = 0.5, 8.0
_META_FILE = "synthetic.json"
_SPLITS = ("train", "val", "unlabeled")


@dataclass
class SceneLayers:
    """Noise-free scene: what the sensor model starts from, plus the object-free surfaces."""

    rgb: np.ndarray             # float32 HxWx3, 0..255, before camera noise
    depth: np.ndarray           # float32 HxW metres, before sensor noise and holes
    label: np.ndarray           # uint8 HxW class ids, no boundaries
    surface_rgb: np.ndarray     # rgb of the bare floor/wall (same light and texture)
    surface_depth: np.ndarray   # depth of the bare floor/wall


def _low_freq(rng, height, width, cell=8):
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (height // cell + 3, width // cell + 3)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), -1, 1)


def _surface_colour(rng):
    grey = rng.uniform(60, 200)
    return np.clip(grey + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)


def _paint_colour(rng):
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb, np.float32) * 255.0


def _rect_mask(rng, shape, cx, cy, half_w, half_h):
    """Axis-aligned or rotated rectangle (same distribution for every class that uses it)."""
    mask = np.zeros(shape, np.uint8)
    angle = 0.0 if rng.uniform() < 0.5 else rng.uniform(-60, 60)
    box = cv2.boxPoints(((float(cx), float(cy)), (2.0 * half_w, 2.0 * half_h), angle))
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return mask.astype(bool)


def render_layers(rng, height, width):
    """Draw one clean scene; see the module docstring for the classes."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    focal = float(width)
    horizon = rng.uniform(0.25, 0.5) * height
    k = rng.uniform(0.6, 1.5) * (height - 1 - horizon)          # floor depth = k / (y - horizon)
    wall_z = (rng.uniform(3.5, MAX_DEPTH_M - 0.3)
              * (1 + rng.uniform(-0.12, 0.12) * (cols / width - 0.5)))
    wall_z = np.minimum(wall_z, MAX_DEPTH_M)
    floor_z = np.where(rows > horizon + 1e-3, k / np.maximum(rows - horizon, 1e-3), np.inf)
    is_floor = floor_z < wall_z
    surface_depth = np.where(is_floor, floor_z, wall_z).astype(np.float32)
    label = np.where(is_floor, FLOOR, WALL).astype(np.uint8)
    depth = surface_depth.copy()
    shape = (height, width)
    scale = min(height, width) / 96.0
    cap = 0.2 * min(height, width)                                 # largest half-extent, px

    def extent(metres, z, squash=1.0):
        return float(np.clip(metres * focal / z * squash, 2 * scale, cap))

    def floor_point(max_z, min_z=0.0):
        ys, xs = np.nonzero(is_floor & (surface_depth < max_z) & (surface_depth >= min_z))
        if len(ys) == 0:
            ys, xs = np.nonzero(is_floor)
        i = rng.integers(len(ys))
        return xs[i], ys[i]

    for _ in range(rng.integers(1, 3)):                           # pits: floor only, sunken
        cx, cy = floor_point(MAX_DEPTH_M - 1.0, 1.0)
        size = extent(rng.uniform(0.25, 0.6), surface_depth[cy, cx])
        mask = np.zeros(shape, np.uint8)
        cv2.ellipse(mask, (int(cx), int(cy)), (int(size), int(max(size * 0.45, 2 * scale))),
                    0, 0, 360, 1, -1)
        mask = mask.astype(bool) & (label == FLOOR)
        label[mask] = PIT
        depth[mask] += rng.uniform(0.25, 0.6)
    for _ in range(rng.integers(2, 5)):                           # reliefs: raised, same look
        on_wall = rng.uniform() < 0.5 and (label == WALL).any()
        if on_wall:
            ys, xs = np.nonzero(label == WALL)
            i = rng.integers(len(ys))
            cx, cy = xs[i], ys[i]
        else:
            cx, cy = floor_point(MAX_DEPTH_M, 1.0)
        z = surface_depth[cy, cx]
        mask = _rect_mask(rng, shape, cx, cy, extent(rng.uniform(0.15, 0.45), z),
                          extent(rng.uniform(0.15, 0.45), z, 1.0 if on_wall else 0.5))
        mask &= label == (WALL if on_wall else FLOOR)
        label[mask] = RELIEF
        depth[mask] = np.maximum(depth[mask] - rng.uniform(0.2, 0.45), MIN_DEPTH_M)

    rgb_idx = np.zeros(shape, np.int32)                          # 0 floor, 1 wall, 2.. paint
    rgb_idx[~is_floor] = 1
    colours = [_surface_colour(rng), _surface_colour(rng)]
    shade = np.ones(shape, np.float32)
    for _ in range(rng.integers(2, 5)):                           # markings: paint, flat
        cx, cy = floor_point(MAX_DEPTH_M, 1.0)
        z = surface_depth[cy, cx]
        mask = _rect_mask(rng, shape, cx, cy, extent(rng.uniform(0.2, 0.5), z),
                          extent(rng.uniform(0.2, 0.5), z, 0.5))
        mask &= label == FLOOR
        label[mask] = MARKING
        rgb_idx[mask] = len(colours)
        colours.append(_paint_colour(rng))
    for _ in range(rng.integers(1, 3)):                           # boxes: paint, raised face
        cx, yb = floor_point(MAX_DEPTH_M - 0.5, 1.5)
        z = surface_depth[yb, cx]
        half_w = extent(rng.uniform(0.1, 0.3), z)
        half_h = extent(rng.uniform(0.1, 0.3), z)
        mask = np.zeros(shape, bool)
        mask[max(int(yb - 2 * half_h), 0):yb + 1,
             max(int(cx - half_w), 0):int(cx + half_w) + 1] = True
        label[mask] = BOX
        depth[mask] = max(z - 0.05, MIN_DEPTH_M)
        rgb_idx[mask] = len(colours)
        colours.append(_paint_colour(rng))
        shade[mask] = rng.uniform(0.8, 1.1)
    for _ in range(rng.integers(1, 3)):                           # balls: shaded sphere
        cx, yb = floor_point(MAX_DEPTH_M - 0.5, 1.2)
        z = surface_depth[yb, cx]
        radius_m = rng.uniform(0.12, 0.3)
        r = extent(radius_m, z) * 0.75
        cy = yb - r
        d2 = ((cols - cx) ** 2 + (rows - cy) ** 2) / (r * r)
        mask = d2 < 1.0
        bulge = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
        label[mask] = BALL
        depth[mask] = np.maximum(z - radius_m * bulge[mask], MIN_DEPTH_M)
        rgb_idx[mask] = len(colours)
        colours.append(_paint_colour(rng))
        shade[mask] = (0.45 + 0.55 * bulge)[mask]

    light = rng.uniform(0.6, 1.25) * (1 + rng.uniform(-0.3, 0.3) * (cols / width - 0.5)
                                      + rng.uniform(-0.3, 0.3) * (rows / height - 0.5))
    texture = (1 + 0.12 * _low_freq(rng, height, width)
               + rng.normal(0, 0.04, shape).astype(np.float32)) * light
    colours = np.stack(colours)
    rgb = colours[rgb_idx] * (texture * shade)[..., None]
    surface_rgb = colours[np.where(is_floor, 0, 1)] * texture[..., None]
    return SceneLayers(rgb.astype(np.float32), depth.astype(np.float32), label,
                       surface_rgb.astype(np.float32), surface_depth)


def _class_boundaries(label):
    """True where a pixel's left or upper neighbour has another class (1-px boundaries)."""
    edge = np.zeros(label.shape, bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    return edge


def _sensor_depth(rng, depth):
    """Noise growing with distance, zero holes (blobs, speckle, depth edges), mm uint16."""
    height, width = depth.shape
    noisy = depth + rng.normal(0, 1, depth.shape).astype(np.float32) * (0.002 + 0.001 * depth ** 2)
    holes = np.zeros(depth.shape, np.uint8)
    for _ in range(rng.integers(1, 4)):
        axes = (int(rng.uniform(0.02, 0.08) * width) + 1, int(rng.uniform(0.02, 0.08) * height) + 1)
        center = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.ellipse(holes, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    gradient = cv2.morphologyEx(depth, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    edges = (gradient > 0.15) & (rng.uniform(size=depth.shape) < 0.4)
    speckle = rng.uniform(size=depth.shape) < 0.005
    hole_mask = holes.astype(bool) | edges | speckle
    mm = np.round(np.clip(noisy, MIN_DEPTH_M, MAX_DEPTH_M) * 1000.0).astype(np.uint16)
    mm[hole_mask] = 0
    return mm


def render_scene(rng, height, width):
    """One sensor frame: (rgb uint8 HxWx3, depth uint16 HxW mm, label uint8 HxW, 255 on edges)."""
    layers = render_layers(rng, height, width)
    rgb = np.clip(layers.rgb + rng.normal(0, 2.0, layers.rgb.shape), 0, 255).astype(np.uint8)
    depth = _sensor_depth(rng, layers.depth)
    label = layers.label.copy()
    label[_class_boundaries(label)] = IGNORE_LABEL
    return rgb, depth, label


def _image_rng(seed, split, index):
    """Each image has its own stream: image i is the same whatever the split sizes are."""
    return np.random.default_rng([seed, _SPLITS.index(split), index])


def generate(out_dir, *, num_train=200, num_val=50, height=96, width=128, seed=0,
             num_unlabeled=0):
    """Write the dataset under `out_dir` (atomically) and return {split: list-file path}."""
    if min(height, width) < 16:
        raise InputError(f"height/width: images must be at least 16x16, got {height}x{width}")
    if min(num_train, num_val, num_unlabeled) < 0:
        raise InputError("num_train/num_val/num_unlabeled: counts must be >= 0")
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(
            os.path.join(out_dir, _META_FILE)):
        raise InputError(f"{out_dir}: folder exists, is not empty and is not a synthetic dataset; "
                         "refusing to replace it")
    counts = {"train": num_train, "val": num_val, "unlabeled": num_unlabeled}
    with atomic_dir(out_dir) as tmp:
        for split, count in counts.items():
            if split == "unlabeled" and count == 0:
                continue
            kinds = ("rgb", "depth") if split == "unlabeled" else ("rgb", "depth", "label")
            for kind in kinds:
                os.makedirs(os.path.join(tmp, split, kind))
            lines = []
            for i in range(count):
                rgb, depth, label = render_scene(_image_rng(seed, split, i), height, width)
                rel = [f"{split}/{kind}/{i:06d}.png" for kind in kinds]
                write_png(os.path.join(tmp, rel[0]), rgb)
                write_png(os.path.join(tmp, rel[1]), depth)
                if split != "unlabeled":
                    write_png(os.path.join(tmp, rel[2]), label)
                lines.append(" ".join(rel) + "\n")
            with open(os.path.join(tmp, f"{split}.txt"), "w") as handle:
                handle.writelines(lines)
        meta = dict(counts, height=height, width=width, seed=seed, class_names=list(CLASS_NAMES),
                    ignore_label=IGNORE_LABEL, depth_units="mm")
        with open(os.path.join(tmp, _META_FILE), "w") as handle:
            json.dump(meta, handle, indent=1)
    return {split: os.path.join(out_dir, f"{split}.txt") for split, count in counts.items()
            if split != "unlabeled" or count > 0}


@guarded
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created or replaced)")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--num-unlabeled", type=int, default=0)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lists = generate(args.out, num_train=args.num_train, num_val=args.num_val,
                     num_unlabeled=args.num_unlabeled, height=args.height,
                     width=args.width, seed=args.seed)
    for split, path in lists.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
