"""How a model turns a batch of normalised inputs into class probabilities.

Two views of an image: `whole` (the image at once, zero-padded to a multiple of 32) and
`slide` (windows of `crop` at `stride`, the last window of each row and column moved back
to end at the border, overlapping logits averaged, as mmsegmentation's `slide`). Either view
can be repeated over several scales and horizontal flips, whose softmax outputs are averaged.
Used by evaluation, predict.py and the Python API alike.
"""

import dataclasses

import tensorflow as tf

from ssma_tf.errors import InputError

PAD_MULTIPLE = 32
MODES = ("whole", "slide")


def _pair(value, name):
    """An int or [h, w] -> (h, w) of positive ints; InputError naming `name` otherwise."""
    values = [value, value] if isinstance(value, int) else list(value or [])
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise InputError(f"{name}: expected a positive int or [height, width], got {value!r}")
    return tuple(values)


def parse_scales(text):
    """"0.75,1,1.25" -> [0.75, 1.0, 1.25]; InputError naming --scales otherwise."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--scales: expected comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise InputError(f"--scales: expected positive numbers, got {text!r}")
    return scales


def parse_size(text, option):
    """"512" -> [512, 512], "512,1024" -> [512, 1024] (height, width); InputError naming
    `option` otherwise. None stays None."""
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) <= 0:
        raise InputError(f"{option}: expected a positive size or HEIGHT,WIDTH, got {text!r}")
    return values * 2 if len(values) == 1 else values


def add_arguments(parser):
    """The --mode / --crop / --stride options of evaluate.py and predict.py."""
    parser.add_argument("--mode", choices=MODES, help="inference view (default: config "
                        "eval_mode): the whole image or sliding windows")
    parser.add_argument("--crop", help="sliding-window size N or H,W (default: config "
                        "eval_crop)")
    parser.add_argument("--stride", help="sliding-window step N or H,W (default: config "
                        "eval_stride, else 2/3 of the crop)")


def settings_from_args(args):
    """{mode, scales, flip, crop, stride} from parsed options (None where not given), for
    `Inference.from_config`."""
    return {"mode": args.mode, "scales": parse_scales(args.scales) if args.scales else None,
            "flip": args.flip, "crop": parse_size(args.crop, "--crop"),
            "stride": parse_size(args.stride, "--stride")}


@dataclasses.dataclass(frozen=True)
class Inference:
    """One inference setting: view `mode`, test-time `scales` and `flip`, and for `slide`
    the window `crop` and `stride` ((h, w); stride defaults to 2/3 of the crop)."""

    mode: str = "whole"
    scales: tuple = (1.0,)
    flip: bool = False
    crop: tuple | None = None
    stride: tuple | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"--mode / eval_mode: expected one of {MODES}, got {self.mode!r}")
        scales = tuple(float(s) for s in self.scales)
        if not scales or min(scales) <= 0:
            raise InputError(f"--scales / eval_scales: expected positive numbers, got "
                             f"{list(self.scales)}")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "flip", bool(self.flip))
        if self.mode == "whole":
            object.__setattr__(self, "crop", None)
            object.__setattr__(self, "stride", None)
            return
        if self.crop is None:
            raise InputError("--mode slide needs a window size: --crop / eval_crop")
        crop = _pair(self.crop, "--crop / eval_crop")
        stride = (tuple(max(1, (2 * c) // 3) for c in crop) if self.stride is None
                  else _pair(self.stride, "--stride / eval_stride"))
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise InputError(f"--stride / eval_stride {list(stride)}: must not exceed the crop "
                             f"{list(crop)} (windows would leave gaps)")
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "stride", stride)

    @classmethod
    def from_config(cls, config, *, mode=None, scales=None, flip=None, crop=None, stride=None):
        """The config's eval_mode / eval_scales / eval_flip / eval_crop / eval_stride, each
        replaced by the argument given (not None)."""
        def pick(value, key):
            return getattr(config, key) if value is None else value
        return cls(pick(mode, "eval_mode"), tuple(pick(scales, "eval_scales")),
                   pick(flip, "eval_flip"), pick(crop, "eval_crop") or None,
                   pick(stride, "eval_stride") or None)

    def to_json(self):
        return {"mode": self.mode, "scales": list(self.scales), "flip": self.flip,
                "crop": list(self.crop) if self.crop else None,
                "stride": list(self.stride) if self.stride else None}


def main_logits(outputs):
    """The `logits` entry of a model's dict output (or the output itself)."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def padded_logits(model, inputs, multiple=PAD_MULTIPLE):
    """float32 model(inputs)["logits"] with H, W zero-padded (bottom/right) up to a multiple of
    `multiple` and cropped back, so any input size works. Zero is the "no data" value."""
    first = next(iter(inputs.values()))
    height, width = tf.shape(first)[1], tf.shape(first)[2]
    # non-negative operands: tf2onnx turns FloorMod into a truncating x - (x / y) * y
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    padded = {
        name: tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]) for name, x in inputs.items()
    }
    logits = main_logits(model(padded, training=False))
    return tf.cast(logits[:, :height, :width, :], tf.float32)


def padded_probabilities(model, inputs, multiple=PAD_MULTIPLE):
    """softmax of `padded_logits`: the whole-image view."""
    return tf.nn.softmax(padded_logits(model, inputs, multiple), axis=-1)


def _grid(size, crop, stride):
    """Number of windows along one axis: starts 0, stride, ... until one reaches the border."""
    return tf.maximum(size - crop + stride - 1, 0) // stride + 1


def slide_logits(model, inputs, crop, stride):
    """Logits averaged over windows of `crop` (h, w) at `stride`: a window starting past
    size - crop is moved back to end at the border (never before 0, so an image smaller
    than the crop is one window); each pixel's sum is divided by its window count."""
    first = next(iter(inputs.values()))
    height, width = tf.shape(first)[1], tf.shape(first)[2]
    rows = _grid(height, crop[0], stride[0])
    cols = _grid(width, crop[1], stride[1])

    def window(index):
        y2 = tf.minimum((index // cols) * stride[0] + crop[0], height)
        x2 = tf.minimum((index % cols) * stride[1] + crop[1], width)
        return tf.maximum(y2 - crop[0], 0), y2, tf.maximum(x2 - crop[1], 0), x2

    def body(index, total, count):
        y1, y2, x1, x2 = window(index)
        logits = padded_logits(model, {n: x[:, y1:y2, x1:x2] for n, x in inputs.items()})
        place = [[0, 0], [y1, height - y2], [x1, width - x2], [0, 0]]
        total += tf.pad(logits, place)
        count += tf.pad(tf.ones([1, y2 - y1, x2 - x1, 1]), place)
        return index + 1, total, count

    classes = main_logits(model.output).shape[-1]
    _, total, count = tf.while_loop(
        lambda index, *_: index < rows * cols, body,
        (tf.constant(0), tf.zeros([tf.shape(first)[0], height, width, classes]),
         tf.zeros([1, height, width, 1])),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, None, classes]),
                          tf.TensorShape([1, None, None, 1])))
    return total / count


def view_probabilities(model, inputs, inference):
    """Softmax of one view (whole image or sliding windows) of `inputs` at their size."""
    if inference.mode == "slide":
        logits = slide_logits(model, inputs, inference.crop, inference.stride)
        return tf.nn.softmax(logits, axis=-1)
    return padded_probabilities(model, inputs)


def _resize_inputs(inputs, size):
    """Bilinear for multi-channel images, nearest for 1-channel (depth: keeps holes at 0)."""
    return {
        name: tf.image.resize(
            x, size, method="nearest" if x.shape[-1] == 1 else "bilinear"
        )
        for name, x in inputs.items()
    }


def probabilities(model, inputs, inference=Inference()):
    """Softmax averaged over `inference.scales` (and horizontal flips), each view as
    `inference.mode` says, resized back to the input size: float32 [B, H, W, C]."""
    first = next(iter(inputs.values()))
    size = tf.shape(first)[1:3]
    total = 0.0
    count = 0
    for scale in inference.scales:
        scaled_size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
        scaled = inputs if scale == 1.0 else _resize_inputs(inputs, scaled_size)
        views = [(scaled, False)]
        if inference.flip:
            views.append(({n: tf.reverse(x, axis=[2]) for n, x in scaled.items()}, True))
        for view, flipped in views:
            probs = view_probabilities(model, view, inference)
            if flipped:
                probs = tf.reverse(probs, axis=[2])
            if scale != 1.0:
                probs = tf.image.resize(probs, size, method="bilinear")
            total += probs
            count += 1
    return total / count


def multiscale_probabilities(model, inputs, scales=(1.0,), flip=False):
    """Whole-image `probabilities` over `scales` (and flips)."""
    return probabilities(model, inputs, Inference("whole", tuple(scales), flip))
