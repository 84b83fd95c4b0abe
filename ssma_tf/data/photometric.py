"""Strong photometric augmentation of normalised colour batches (FixMatch / UniMatch style).

Each op works on a batch of RGB images [B, H, W, 3] with values in 0..1, draws its random
factors per image from a stateless seed and clips to 0..1 after every step, with torchvision
semantics:
- colour jitter (`colour_jitter`): brightness x*b, contrast blend with the image's grey mean
  c*x + (1-c)*mean(grey), saturation blend with the grey image s*x + (1-s)*grey (factors
  U[1-strength, 1+strength]), hue shift by U[-hue, hue] of the hue circle (HSV), the four in
  a random order per image;
- grayscale (`random_grayscale`): the ITU-R 601 luma on all three channels;
- Gaussian blur (`gaussian_blur`): sigma U(sigma_range) (PIL's radius is the sigma), kernel
  radius ceil(3 * max sigma), edges replicated, separable.
`strong_colour` chains them, each applied to an image with its own probability, and
`unit_rgb` / `normalised_rgb` convert to and from the ImageNet-normalised inputs the data
pipeline yields (data/normalize.py).
"""

import math

import tensorflow as tf

from ssma_tf.data.augment import LUMA_WEIGHTS, split_seed
from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD

JITTER_OPS = 4          # brightness, contrast, saturation, hue


def unit_rgb(normalised):
    """ImageNet-normalised RGB -> 0..1."""
    return normalised * tf.constant(IMAGENET_STD) + tf.constant(IMAGENET_MEAN)


def normalised_rgb(unit):
    """0..1 RGB -> ImageNet-normalised."""
    return (unit - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def grey(images):
    """Luma [B, H, W, 1] of RGB images."""
    return tf.reduce_sum(images * tf.constant(LUMA_WEIGHTS), axis=-1, keepdims=True)


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def _factors(seed, batch, strength):
    return tf.random.stateless_uniform([batch], seed, 1.0 - strength, 1.0 + strength)


def colour_jitter(images, seed, *, brightness, contrast, saturation, hue):
    """torchvision ColorJitter on every image, its four ops in a random order per image."""
    batch = tf.shape(images)[0]
    b_seed, c_seed, s_seed, h_seed, order_seed = split_seed(seed, 5)
    factor_b = _per_image(_factors(b_seed, batch, brightness))
    factor_c = _per_image(_factors(c_seed, batch, contrast))
    factor_s = _per_image(_factors(s_seed, batch, saturation))
    shift = _per_image(tf.random.stateless_uniform([batch], h_seed, -hue, hue))

    def clip(x):
        return tf.clip_by_value(x, 0.0, 1.0)

    def hue_shift(x):
        hsv = tf.image.rgb_to_hsv(x)
        h = tf.math.floormod(hsv[..., :1] + shift, 1.0)
        return clip(tf.image.hsv_to_rgb(tf.concat([h, hsv[..., 1:]], -1)))

    ops = (lambda x: clip(x * factor_b),
           lambda x: clip(factor_c * x + (1.0 - factor_c) * tf.reduce_mean(
               grey(x), axis=[1, 2, 3], keepdims=True)),
           lambda x: clip(factor_s * x + (1.0 - factor_s) * grey(x)),
           hue_shift)
    # A random permutation per image: the ranks of uniform noise.
    order = tf.argsort(tf.random.stateless_uniform([batch, JITTER_OPS], order_seed), axis=-1)
    for position in range(JITTER_OPS):
        chosen = order[:, position]
        images = tf.add_n([tf.where(_per_image(tf.equal(chosen, k)), op(images), 0.0)
                           for k, op in enumerate(ops)])
    return images


def random_grayscale(images, seed, prob):
    """Each image becomes its luma on all three channels with probability `prob`."""
    pick = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < prob
    return tf.where(_per_image(pick), tf.tile(grey(images), [1, 1, 1, 3]), images)


def blur_kernels(sigma, radius):
    """Normalised 1-D Gaussian weights [B, 2*radius+1] for per-image `sigma` [B]."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-tf.square(offsets)[None] / (2.0 * tf.square(sigma)[:, None]))
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _blur_axis(images, kernels, radius, axis):
    size = tf.shape(images)[axis]
    first = tf.gather(images, [0], axis=axis)
    last = tf.gather(images, [size - 1], axis=axis)
    padded = tf.concat([tf.repeat(first, radius, axis=axis), images,
                        tf.repeat(last, radius, axis=axis)], axis=axis)
    out = 0.0
    for k in range(2 * radius + 1):
        window = tf.gather(padded, tf.range(k, k + size), axis=axis)
        out += _per_image(kernels[:, k]) * window
    return out


def gaussian_blur(images, sigma, radius):
    """Separable Gaussian blur with per-image `sigma` [B] and kernel radius `radius`."""
    kernels = blur_kernels(sigma, radius)
    return _blur_axis(_blur_axis(images, kernels, radius, 1), kernels, radius, 2)


def strong_colour(images, seed, *, jitter_prob=0.8, jitter=(0.5, 0.5, 0.5, 0.25),
                  grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0)):
    """UniMatch's strong view of 0..1 RGB images [B, H, W, 3]: with `jitter_prob` a colour
    jitter (brightness, contrast, saturation, hue strengths `jitter`), then grayscale with
    `grayscale_prob`, then a Gaussian blur of sigma U(`blur_sigma`) with `blur_prob`."""
    batch = tf.shape(images)[0]
    apply_seed, jitter_seed, grey_seed, blur_seed, sigma_seed = split_seed(seed, 5)
    apply_jitter, apply_blur = tf.unstack(
        tf.random.stateless_uniform([2, batch], apply_seed) < [[jitter_prob], [blur_prob]])
    brightness, contrast, saturation, hue = jitter
    jittered = colour_jitter(images, jitter_seed, brightness=brightness, contrast=contrast,
                             saturation=saturation, hue=hue)
    images = tf.where(_per_image(apply_jitter), jittered, images)
    images = random_grayscale(images, grey_seed, grayscale_prob)
    sigma = tf.random.stateless_uniform([batch], sigma_seed, *blur_sigma)
    blurred = gaussian_blur(images, sigma, int(math.ceil(3.0 * max(blur_sigma))))
    return tf.where(_per_image(apply_blur), blurred, images)
