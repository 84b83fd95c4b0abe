"""Joint augmentation of all modalities and the label: scale, crop with padding, flip, jitter.

Geometry is one `tf.image.crop_and_resize` per tensor: random scale, crop window (padding
where the scaled image is smaller than the crop) and horizontal flip all become one sampling
box, shared by every modality and the label, so they stay aligned pixel for pixel; only the
crop is ever computed, never the whole scaled image. Colour
and image modalities are sampled bilinearly, raw depth and labels with NEAREST (valid depth
is never blended with holes). Padding is 0 in normalised space (0 = missing for depth) and
`ignore_label` for labels. All randomness is stateless, driven by a per-example seed.
"""

import tensorflow as tf

from ssma_tf.data.normalize import normalize_modality

BRIGHTNESS_DELTA = 0.125
CONTRAST_RANGE = (0.6, 1.4)
SATURATION_RANGE = (0.6, 1.4)


def split_seed(seed, num):
    """`num` independent stateless seeds (each shape [2]) derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def photometric_jitter(image, seed):
    """Random brightness, contrast and saturation of a float RGB image in [0, 255]."""
    b_seed, c_seed, s_seed = split_seed(seed, 3)
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, BRIGHTNESS_DELTA, b_seed)
    x = tf.image.stateless_random_contrast(x, *CONTRAST_RANGE, c_seed)
    x = tf.image.stateless_random_saturation(x, *SATURATION_RANGE, s_seed)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def sample_geometry(seed, image_hw, crop_hw, scale_range=(0.5, 2.0), flip=True):
    """Random scale s ~ U(scale_range), a `crop_hw` window at a random integer offset into the
    scaled image (negative offsets = padding) and a mirror with p=0.5 if `flip`.

    Returns (box, valid): the crop_and_resize box [y1, x1, y2, x2] over the image padded by
    one replicated pixel (see `apply_geometry`), and a bool [h, w, 1] mask of the output
    pixels that lie inside the scaled image (the rest is padding).
    """
    scale_seed, offset_seed, flip_seed = split_seed(seed, 3)
    size = tf.cast(image_hw, tf.float32)
    crop = tf.constant(crop_hw, tf.float32)
    scale = tf.random.stateless_uniform([], scale_seed, *scale_range)
    scaled = tf.maximum(tf.round(size * scale), 1.0)
    slack = scaled - crop
    low, high = tf.minimum(slack, 0.0), tf.maximum(slack, 0.0)
    u = tf.random.stateless_uniform([2], offset_seed)
    offset = tf.minimum(tf.floor(low + u * (high - low + 1.0)), high)
    # Output pixel i samples source coordinate (offset + i + 0.5) * size / scaled - 0.5,
    # shifted by +1 for the replicated border.
    ratio = size / scaled
    start = (offset + 0.5) * ratio + 0.5
    end = start + (crop - 1.0) * ratio
    (y1, x1), (y2, x2) = tf.unstack(start / (size + 1.0)), tf.unstack(end / (size + 1.0))
    if flip:
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        x1, x2 = tf.where(mirror, 1.0 - x1, x1), tf.where(mirror, 1.0 - x2, x2)
    rows = offset[0] + tf.range(crop_hw[0], dtype=tf.float32)
    cols = offset[1] + tf.range(crop_hw[1], dtype=tf.float32)
    valid = ((rows >= 0) & (rows < scaled[0]))[:, None] & ((cols >= 0) & (cols < scaled[1]))[None]
    return tf.stack([y1, x1, y2, x2]), valid[..., None]


def apply_geometry(image, geometry, crop_hw, method="bilinear", pad_value=0.0):
    """Sample `image` [H, W, C] with `geometry` from `sample_geometry` into float32 [h, w, C].

    The image gets a one-pixel replicated border first, so samples within half a pixel of
    the edge (upscaling) read the edge pixel; padding pixels become `pad_value`.
    """
    box, valid = geometry
    bordered = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    out = tf.image.crop_and_resize(tf.expand_dims(bordered, 0), tf.expand_dims(box, 0), [0],
                                   crop_hw, method=method)[0]
    return tf.where(valid, out, tf.cast(pad_value, tf.float32))


def augment(example, specs, *, crop, seed, ignore_label=255, scale_range=(0.5, 2.0), flip=True,
            photometric=True, depth_max=10.0, num_views=1):
    """Augment one decoded example jointly and normalise it.

    example: {name: uint8|uint16 [H, W, C], optional "label": uint8 [H, W, 1]};
    specs: {name: ModalitySpec} of the modalities to return; seed: int [2].
    Returns (views, label): `num_views` dicts {name: float32 [h, w, C]} sharing one geometry
    with independent colour jitter, and int32 [h, w] labels (None without "label").
    """
    crop = tuple(int(c) for c in crop)
    geometry_seed, *view_seeds = split_seed(seed, 1 + num_views)
    first = example[next(iter(specs))]
    geometry = sample_geometry(geometry_seed, tf.shape(first)[:2], crop, scale_range, flip)

    def place(x, spec):
        method = "nearest" if spec.encoding == "raw" else "bilinear"
        out = apply_geometry(normalize_modality(x, spec, depth_max), geometry, crop, method)
        return tf.ensure_shape(out, crop + (spec.channels,))

    shared = {name: place(example[name], spec) for name, spec in specs.items()
              if not (photometric and spec.photometric)}
    views = []
    for view_seed in view_seeds:
        view = dict(shared)
        for i, (name, spec) in enumerate(specs.items()):
            if name not in shared:
                jittered = photometric_jitter(tf.cast(example[name], tf.float32),
                                              tf.random.experimental.stateless_fold_in(view_seed, i))
                view[name] = place(jittered, spec)
        views.append({name: view[name] for name in specs})
    label = None
    if "label" in example:
        label = apply_geometry(tf.cast(example["label"], tf.float32), geometry, crop, "nearest",
                               ignore_label)
        label = tf.ensure_shape(tf.cast(label[..., 0], tf.int32), crop)
    return views, label
