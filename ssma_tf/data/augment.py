"""Joint augmentation of all modalities and the label: scale, crop with padding, flip, jitter.

Random scale, crop window (padding where the scaled image is smaller than the crop) and
horizontal flip become one map from output pixels to source coordinates, shared by every
modality and the label, so they stay aligned pixel for pixel; only the crop is ever
computed, never the whole scaled image. Colour and image modalities are sampled bilinearly,
raw depth and labels with NEAREST (valid depth is never blended with holes). Padding is 0
in normalised space (0 = missing for depth) and `ignore_label` for labels. Colour jitter,
normalisation and padding are fused into a few passes over the crop (`normalize_window`).
All randomness is stateless, driven by a per-example seed.
"""

import tensorflow as tf

from ssma_tf.data.normalize import channel_affine

BRIGHTNESS_DELTA = 0.125            # fraction of the 0..255 range
CONTRAST_RANGE = (0.6, 1.4)
SATURATION_RANGE = (0.6, 1.4)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def split_seed(seed, num):
    """`num` independent stateless seeds (each shape [2]) derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def jitter_transform(seed, mean):
    """A random brightness, contrast and saturation change as one colour matrix and offset.

    Brightness adds delta, contrast scales around the per-channel `mean`, saturation blends
    with the luma grey (x -> s*x + (1-s)*grey). All three are affine in x, so together they
    are x -> matrix @ x + offset (float [3, 3], [3], in the 0..255 range): a single pass over
    the pixels where tf.image's ops take three (its saturation is an HSV round trip).
    """
    b_seed, c_seed, s_seed = split_seed(seed, 3)
    delta = tf.random.stateless_uniform([], b_seed, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA) * 255.0
    contrast = tf.random.stateless_uniform([], c_seed, *CONTRAST_RANGE)
    saturation = tf.random.stateless_uniform([], s_seed, *SATURATION_RANGE)
    grey_rows = tf.ones([3, 1]) * tf.constant([LUMA_WEIGHTS], tf.float32)
    saturate = saturation * tf.eye(3) + (1.0 - saturation) * grey_rows
    return contrast * saturate, tf.linalg.matvec(saturate, (1.0 - contrast) * mean + delta)


def colour_mean(image):
    """Per-channel mean of a float image [H, W, 3] over every 8th row (plenty for contrast)."""
    return tf.reduce_mean(tf.gather(image, tf.range(0, tf.shape(image)[0], 8)), axis=[0, 1])


def sample_geometry(seed, image_hw, crop_hw, scale_range=(0.5, 2.0), flip=True):
    """Random scale s ~ U(scale_range), a `crop_hw` window at a random integer offset into the
    scaled image (negative offsets = padding) and a mirror with p=0.5 if `flip`.

    Returns (rows, cols, inside): the source coordinates (pixel units, float32 [h] and [w])
    each output row and column samples, and int32 [top, bottom, left, right]: the output rows
    top..bottom-1 and columns left..right-1 lie inside the scaled image, the rest is padding
    (a mirror does not move it: the region is symmetric under the flip).
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
    # Output pixel i shows scaled pixel offset + i, whose centre is at source coordinate
    # (offset + i + 0.5) * size / scaled - 0.5.
    ratio = size / scaled
    rows = (offset[0] + tf.range(crop_hw[0], dtype=tf.float32) + 0.5) * ratio[0] - 0.5
    cols = (offset[1] + tf.range(crop_hw[1], dtype=tf.float32) + 0.5) * ratio[1] - 0.5
    if flip:
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        cols = tf.where(mirror, size[1] - 1.0 - cols, cols)
    start_in, end_in = tf.maximum(-offset, 0.0), tf.minimum(scaled - offset, crop)
    inside = tf.cast(tf.stack([start_in[0], end_in[0], start_in[1], end_in[1]]), tf.int32)
    return rows, cols, inside


def sample_window(image, geometry, crop_hw, method="bilinear"):
    """Sample `image` [H, W, C] (any numeric dtype) at the coordinates of `geometry` ->
    [h, w, C]: float32 for bilinear, the stored dtype for nearest. Coordinates are clamped to
    the image (samples within half a pixel of the edge read the edge pixel); padding pixels
    hold arbitrary values.

    nearest: a gather of whole rows, a transpose, a gather of whole (former) columns and a
    transpose back (contiguous copies: ~2x faster than gathering along axis 1); bilinear:
    one crop_and_resize over the source window the coordinates span, with a one-pixel
    replicated border (its box is the first and last coordinates; a mirror is a box with
    x1 > x2).
    """
    rows, cols, _ = geometry
    size = tf.shape(image)[:2]
    if method == "nearest":
        def index(coords, n):
            return tf.cast(tf.clip_by_value(tf.floor(coords + 0.5), 0.0,
                                            tf.cast(n - 1, tf.float32)), tf.int32)
        picked = tf.transpose(tf.gather(image, index(rows, size[0])), [1, 0, 2])
        return tf.transpose(tf.gather(picked, index(cols, size[1])), [1, 0, 2])
    # Only the source window the samples touch is bordered and cast (upscaled crops need
    # a fraction of the image); its border rows/columns repeat its edge, which is the
    # image edge or the neighbouring pixel the coordinates never pass.
    last = tf.cast(size - 1, tf.float32)
    low = tf.cast(tf.clip_by_value(tf.floor(tf.minimum([rows[0], cols[0]], [rows[-1], cols[-1]])),
                                   0.0, last), tf.int32)
    high = tf.cast(tf.clip_by_value(tf.math.ceil(tf.maximum([rows[0], cols[0]],
                                                            [rows[-1], cols[-1]])), 0.0, last),
                   tf.int32)
    window = image[low[0]:high[0] + 1, low[1]:high[1] + 1]
    bordered = tf.concat([window[:1], window, window[-1:]], axis=0)
    bordered = tf.concat([bordered[:, :1], bordered, bordered[:, -1:]], axis=1)
    bordered = tf.cast(bordered, tf.float32)  # crop_and_resize is fastest on float32
    extent = tf.cast(high - low, tf.float32) + 2.0  # bordered window size - 1
    start = 1.0 - tf.cast(low, tf.float32)
    box = tf.stack([(rows[0] + start[0]) / extent[0], (cols[0] + start[1]) / extent[1],
                    (rows[-1] + start[0]) / extent[0], (cols[-1] + start[1]) / extent[1]])
    return tf.image.crop_and_resize(bordered[None], box[None], [0], crop_hw, method=method)[0]


def fill_padding(sampled, geometry, pad_value=0.0):
    """Set the padding pixels of a sampled [h, w, C] tensor to `pad_value` (slice + pad)."""
    top, bottom, left, right = tf.unstack(geometry[2])
    height, width = sampled.shape[0], sampled.shape[1]
    padded = tf.pad(sampled[top:bottom, left:right],
                    [[top, height - bottom], [left, width - right], [0, 0]],
                    constant_values=tf.cast(pad_value, sampled.dtype))
    return tf.ensure_shape(padded, sampled.shape)


def apply_geometry(image, geometry, crop_hw, method="bilinear", pad_value=0.0):
    """`sample_window`, then padding pixels set to `pad_value`."""
    return fill_padding(sample_window(image, geometry, crop_hw, method), geometry, pad_value)


def normalize_window(sampled, spec, geometry, *, depth_max=10.0, jitter=None):
    """Normalise a sampled crop [h, w, C] (stored value range) and zero its padding, fused.

    Works on the [h, w*C] view, where per-channel constants are rows that broadcast fast.
    jitter=(matrix, offset) first maps colours through `jitter_transform` and clips them to
    0..255; the normalisation is folded into that matrix, offset and clip range. Padding
    columns get a zero scale (or clip range), padding rows are sliced off and padded back.
    """
    height, width, channels = sampled.shape
    top, bottom, left, right = tf.unstack(geometry[2])
    scale, bias = (tf.constant(v, tf.float32) for v in channel_affine(spec, depth_max))
    column = tf.range(width)
    inside = tf.cast((column >= left) & (column < right), tf.float32)[:, None]

    def row(per_channel):  # [C] -> [1, w*C], zero in padding columns
        return tf.reshape(inside * per_channel, [1, width * channels])

    x = tf.cast(sampled, tf.float32)
    if jitter is None:
        out = tf.reshape(x, [height, width * channels]) * row(scale) + row(bias)
    else:
        matrix, offset = jitter
        out = tf.reshape(tf.matmul(tf.reshape(x, [-1, channels]), matrix * scale[:, None],
                                   transpose_b=True), [height, width * channels])
        out = tf.minimum(tf.maximum(out + row(offset * scale + bias), row(bias)),
                         row(255.0 * scale + bias))
    out = tf.pad(out[top:bottom], [[top, height - bottom], [0, 0]])
    return tf.reshape(out, [height, width, channels])


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

    views = [{} for _ in view_seeds]
    for i, (name, spec) in enumerate(specs.items()):
        method = "nearest" if spec.encoding == "raw" else "bilinear"
        sampled = tf.ensure_shape(sample_window(example[name], geometry, crop, method),
                                  crop + (spec.channels,))
        if photometric and spec.photometric:
            mean = colour_mean(sampled)
            for view, view_seed in zip(views, view_seeds):
                jitter_seed = tf.random.experimental.stateless_fold_in(view_seed, i)
                view[name] = normalize_window(sampled, spec, geometry, depth_max=depth_max,
                                              jitter=jitter_transform(jitter_seed, mean))
        else:
            shared = normalize_window(sampled, spec, geometry, depth_max=depth_max)
            for view in views:
                view[name] = shared
    label = None
    if "label" in example:
        label = apply_geometry(example["label"], geometry, crop, "nearest", ignore_label)
        label = tf.ensure_shape(tf.cast(label[..., 0], tf.int32), crop)
    return views, label
