"""CutMix between unlabeled images with box masks (CPS+CutMix style).

Per sample, `num_boxes` boxes toggle an all-zero mask (overlaps XOR back to 0). Each box
covers a fraction U(area_range)/num_boxes of the image with a random aspect ratio
(height fraction exp(U(0,1) * log(area)), width fraction area / height fraction) and lies
inside the image. Mask value 1 takes the partner image, 0 keeps the own image.

The partner of row i is row i-1 of the same per-replica unlabeled batch (a roll), so one
unlabeled stream suffices and the partner's predictions are the rolled predictions: no
extra forward pass. With one unlabeled image per replica the partner is the image itself
and mixing is a no-op.
"""

import tensorflow as tf


def box_masks(seed, batch_size, height, width, num_boxes=3, area_range=(0.25, 0.5)):
    """float32 [B, H, W] masks of 0/1 made of XOR-ed random boxes."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    shape = [batch_size, num_boxes]
    area = tf.random.stateless_uniform(shape, seeds[0], *area_range) / num_boxes
    height_frac = tf.exp(tf.random.stateless_uniform(shape, seeds[1]) * tf.math.log(area))
    width_frac = area / height_frac
    size = tf.stack([height_frac, width_frac], -1)                 # [B, K, 2]
    extent = tf.cast(tf.stack([height, width]), tf.float32)
    size = tf.round(size * extent)
    corner = tf.round((extent - size) * tf.random.stateless_uniform(shape + [2], seeds[2]))
    rows = tf.cast(tf.range(height), tf.float32)[None, None, :, None]
    cols = tf.cast(tf.range(width), tf.float32)[None, None, None, :]
    top, left = corner[..., 0, None, None], corner[..., 1, None, None]
    bottom, right = top + size[..., 0, None, None], left + size[..., 1, None, None]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # [B,K,H,W]
    toggles = tf.reduce_sum(tf.cast(inside, tf.int32), axis=1)
    return tf.cast(toggles % 2, tf.float32)


def cutmix(tensor, mask):
    """Row i keeps its own pixels where mask == 0 and takes row i-1's (a roll along the
    batch) where mask == 1. `tensor` is [B, H, W] (labels) or [B, H, W, C]."""
    mask = tf.cast(mask, tf.bool)
    if tensor.shape.rank == 4:
        mask = mask[..., None]
    return tf.where(mask, tf.roll(tensor, shift=1, axis=0), tensor)
