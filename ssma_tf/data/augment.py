"""Joint augmentation of all modalities and the label: scale, crop with padding, flip, jitter.

Geometry is one `tf.image.crop_and_resize` per tensor: random scale, crop window (padding
where the scaled image is smaller than the crop) and horizontal flip all become one sampling
box, shared by every modality and the label, so they stay aligned pixel for pixel. Colour
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


def sample_crop_box(seed, image_hw, crop_hw, scale_range=(0.5, 2.0), flip=True):
    """A crop_and_resize box [y1, x1, y2, x2] for: scale by s ~ U(scale_range), crop `crop_hw`
    at a random integer offset (negative offsets = padding), mirror with p=0.5 if `flip`."""
    scale_seed, offset_seed, flip_seed = split_seed(seed, 3)
    size = tf.cast(image_hw, tf.float32)
    crop = tf.constant(crop_hw, tf.float32)
    scale = tf.random.stateless_uniform([], scale_seed, *scale_range)
    scaled = tf.maximum(tf.round(size * scale), 1.0)
    slack = scaled - crop
    low, high = tf.minimum(slack, 0.0), tf.maximum(slack, 0.0)
    u = tf.random.stateless_uniform([2], offset_seed)
    offset = tf.minimum(tf.floor(low + u * (high - low + 1.0)), high)
    # Output pixel i samples source coordinate (offset + i + 0.5) * size / scaled - 0.5.
    ratio = size / scaled
    start = (offset + 0.5) * ratio - 0.5
    end = start + (crop - 1.0) * ratio
    denom = tf.maximum(size - 1.0, 1.0)
    (y1, x1), (y2, x2) = tf.unstack(start / denom), tf.unstack(end / denom)
    if flip:
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        x1, x2 = tf.where(mirror, 1.0 - x1, x1), tf.where(mirror, 1.0 - x2, x2)
    return tf.stack([y1, x1, y2, x2])


def apply_crop_box(image, box, crop_hw, method="bilinear", pad_value=0.0):
    """Sample `image` [H, W, C] over `box` into a float32 [h, w, C] tensor; outside -> pad_value."""
    out = tf.image.crop_and_resize(tf.expand_dims(image, 0), tf.expand_dims(box, 0), [0],
                                   crop_hw, method=method, extrapolation_value=pad_value)
    return out[0]


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
    box = sample_crop_box(geometry_seed, tf.shape(first)[:2], crop, scale_range, flip)

    def place(x, spec):
        method = "nearest" if spec.encoding == "raw" else "bilinear"
        out = apply_crop_box(normalize_modality(x, spec, depth_max), box, crop, method)
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
        label = apply_crop_box(tf.cast(example["label"], tf.float32), box, crop, "nearest",
                               float(ignore_label))
        label = tf.ensure_shape(tf.cast(label[..., 0], tf.int32), crop)
    return views, label
