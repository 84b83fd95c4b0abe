"""The Python API: a trained model as one object that segments images of any size.

    from ssma_tf import Segmenter
    seg = Segmenter.load("runs/demo/ssma")          # a run folder or an exported SavedModel
    result = seg(rgb="rgb.png", depth="depth.png")  # a modality not passed is missing

`Segmenter.load` takes a training run's checkpoint folder (the one holding run_info.json,
also `<checkpoint>/best` and converted checkpoint folders, which have the same layout) or an
exported SavedModel (a version folder, or the model folder: its highest version). Inputs are
numpy images (RGB uint8; depth uint16 in stored units, millimetres by default, or float
metres) or image files (16-bit PNG for depth). A missing modality is fed as the toolkit's
"missing" value: all-zero normalised input (a SavedModel gets zeros in its raw input, its
documented convention, which equals the normalised zero for raw depth only).
"""

import dataclasses
import os

import numpy as np

from ssma_tf.errors import InputError

SAVED_MODEL_FILE = "saved_model.pb"


@dataclasses.dataclass
class Segmentation:
    """One image's prediction."""

    labels: np.ndarray          # int32 [H, W] train ids
    probabilities: np.ndarray   # float32 [H, W, C]
    colored: np.ndarray         # uint8 [H, W, 3]: labels in the dataset palette
    image: np.ndarray           # uint8 [H, W, 3]: the camera image (or a display of the input)
    class_names: list
    palette: np.ndarray         # uint8 [>= C, 3]
    missing: tuple = ()         # the modalities that were not given

    @property
    def overlay(self):
        """The coloured labels blended half over the image."""
        from ssma_tf.visualization import blend

        return blend(self.image, self.colored)

    def legend(self):
        """[(class name, (r, g, b), pixel fraction)] for each class present, most pixels first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]]
        return [(self.class_names[c], tuple(int(v) for v in self.palette[c]),
                 float(counts[c] / self.labels.size)) for c in order]


class Segmenter:
    """A loaded model: call it with one image per modality (keywords named as the model's
    modalities); returns a `Segmentation`."""

    def __init__(self, predict, specs, class_names, palette, *, depth_max, source,
                 inference=None):
        self._predict = predict          # {name: stored array [1,H,W,C]} -> probs [1,H,W,C]
        self.specs = specs               # {modality: ModalitySpec}, the model's input order
        self.class_names = list(class_names)
        self.palette = np.asarray(palette, np.uint8)
        self.depth_max = depth_max
        self.source = source
        self.inference = inference

    @property
    def modalities(self):
        return list(self.specs)

    @classmethod
    def load(cls, path, *, mode=None, scales=None, flip=None, crop=None, stride=None,
             overrides=None):
        """A Segmenter from a run / checkpoint folder or an exported SavedModel at `path`.

        For a run: the inference setting is the run's config (eval_mode, eval_scales, ...)
        with the arguments given replacing it; `overrides` ({key: value}) changes other config
        keys (e.g. {"eval_output": "logits_depth"}). A SavedModel runs its own graph: whole
        image, single scale.
        """
        path = os.fspath(path)
        saved = saved_model_dir(path)
        if saved:
            if any(v is not None for v in (mode, scales, flip, crop, stride)) or overrides:
                raise InputError(f"{path}: a SavedModel runs its exported graph (whole image, "
                                 "one scale); load the training run for other settings")
            return cls._from_saved_model(saved)
        config = run_config(path)
        if overrides:
            config = config.replace(**overrides)
        return cls.from_config(config, path, mode=mode, scales=scales, flip=flip, crop=crop,
                               stride=stride)

    @classmethod
    def from_config(cls, config, checkpoint=None, **settings):
        """A Segmenter of `config`'s eval model restored from `checkpoint` (default the
        config's); `settings`: mode, scales, flip, crop, stride as `Inference.from_config`."""
        import tensorflow as tf

        from ssma_tf.data.normalize import normalize
        from ssma_tf.evaluation.evaluator import probability_predictor
        from ssma_tf.evaluation.inference import Inference
        from ssma_tf.runs import load_run

        run = load_run(config, checkpoint)
        inference = Inference.from_config(config, **settings)
        predict_probabilities = probability_predictor(run.model, inference)
        specs = run.specs

        def predict(arrays):
            first = next(iter(arrays.values()))
            inputs = normalize({n: tf.constant(a) for n, a in arrays.items()}, specs,
                               config.depth_max)
            inputs = {n: inputs[n] if n in inputs else
                      tf.zeros(first.shape[:3] + (specs[n].channels,)) for n in specs}
            return predict_probabilities(inputs).numpy()

        return cls(predict, specs, run.class_names, run.palette, depth_max=config.depth_max,
                   source=run.checkpoint, inference=inference)

    @classmethod
    def _from_saved_model(cls, folder):
        import tensorflow as tf
        import yaml

        from ssma_tf.data.schema import ModalitySpec
        from ssma_tf.io_utils import read_json
        from ssma_tf.visualization import dataset_labels

        info = read_json(os.path.join(folder, "export_info.json"))
        if not info:
            raise InputError(f"{folder}: no export_info.json beside the SavedModel (export it "
                             "with export.py)")
        specs = {s["name"]: ModalitySpec.from_json(s) for s in info["modalities"]}
        dtypes = {name: tf.as_dtype(value["dtype"]) for name, value in info["inputs"].items()}
        with open(os.path.join(folder, "config.yaml")) as handle:
            config = yaml.safe_load(handle) or {}
        serve = tf.saved_model.load(folder).signatures["serving_default"]
        metres = info.get("depth_input") == "metres"

        def raw_input(name, array):
            if metres and specs[name].encoding == "raw":
                return tf.constant(array.astype(np.float32) * np.float32(specs[name].depth_scale))
            return tf.constant(array, dtypes[name])

        def predict(arrays):
            first = next(iter(arrays.values()))
            inputs = {n: raw_input(n, arrays[n]) if n in arrays else
                      tf.zeros(first.shape[:3] + (specs[n].channels,), dtypes[n]) for n in specs}
            return serve(**inputs)["probabilities"].numpy()

        names, palette = dataset_labels(config.get("dataset"), config.get("num_classes"))
        return cls(predict, specs, names, palette, depth_max=info.get("depth_max", 10.0),
                   source=folder)

    def __call__(self, **images):
        """Segments one sample: `images` maps modality names to numpy images or file paths;
        at least one modality must be given, the others are missing."""
        return self.segment(images)

    def segment(self, images, where=None, allow_8bit_depth=False):
        """`__call__` with the images as a dict; `where` prefixes input errors (default the
        model's source); `allow_8bit_depth` accepts 8-bit/JPEG files as raw depth."""
        from ssma_tf.data.sample_input import read_sample
        from ssma_tf.visualization import colorize

        unknown = sorted(set(images) - set(self.specs))
        if unknown:
            raise InputError(f"{unknown[0]!r}: not an input of this model (it takes "
                             f"{', '.join(self.specs)})")
        given = {n: v for n, v in images.items() if v is not None}
        if not given:
            raise InputError(f"give at least one of the model's inputs: {', '.join(self.specs)}")
        arrays = read_sample(given, self.specs, where or self.source, allow_8bit_depth)
        probs = self._predict({n: a[None] for n, a in arrays.items()})[0]
        labels = np.argmax(probs, axis=-1).astype(np.int32)
        return Segmentation(labels, probs, colorize(labels, self.palette, ignore_label=-1),
                            self._background(arrays), self.class_names, self.palette,
                            tuple(n for n in self.specs if n not in given))

    def _background(self, arrays):
        from ssma_tf.data.normalize import normalize
        from ssma_tf.visualization import display_image

        if "rgb" in arrays and arrays["rgb"].shape[-1] == 3:
            return arrays["rgb"]
        normalised = normalize(arrays, self.specs, self.depth_max)
        return display_image({n: x.numpy() for n, x in normalised.items()}, self.specs)


def write_predictions(segmenter, samples, output_dir, where, allow_8bit_depth=False):
    """Segments each (stem, {modality: path}) of `samples` and writes `<stem>_labels.png`
    (uint8 train ids), `<stem>_color.png` and `<stem>_overlay.png` under `output_dir` (a
    repeated stem gets `_<index>`); returns the number of samples written."""
    from ssma_tf.visualization import write_png

    used = set()
    for index, (stem, paths) in enumerate(samples):
        result = segmenter.segment(paths, f"{where} sample {index + 1} ({stem})",
                                   allow_8bit_depth)
        name = stem if stem not in used else f"{stem}_{index}"
        used.add(name)
        base = os.path.join(output_dir, name)
        write_png(f"{base}_labels.png", result.labels.astype(np.uint8))
        write_png(f"{base}_color.png", result.colored)
        write_png(f"{base}_overlay.png", result.overlay)
    return len(samples)


def run_config(path):
    """The config saved in the run_info.json of the run / checkpoint folder (or checkpoint
    prefix) `path`; InputError naming `path` when there is none."""
    from ssma_tf.config import config_from_saved
    from ssma_tf.training.checkpoints import checkpoint_folder, read_run_info
    from ssma_tf.training.run_info import RUN_INFO

    folder = path if os.path.isdir(path) else checkpoint_folder(path)
    info = read_run_info(folder) if os.path.isdir(folder) else None
    if not info or not info.get("config"):
        raise InputError(f"{path}: neither a SavedModel ({SAVED_MODEL_FILE}) nor a run or "
                         f"checkpoint folder with a {RUN_INFO} holding its config")
    config = config_from_saved(info["config"], os.path.join(folder, RUN_INFO))
    if not config.num_classes:
        raise InputError(f"{os.path.join(folder, RUN_INFO)}: the config has no num_classes")
    return config


def saved_model_dir(path):
    """`path` if it is a SavedModel folder, else its highest integer version folder that is
    one (TF Serving's model layout), else None."""
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    if not os.path.isdir(path):
        return None
    versions = sorted((int(n) for n in os.listdir(path) if n.isdigit()
                       and os.path.isfile(os.path.join(path, n, SAVED_MODEL_FILE))), reverse=True)
    return os.path.join(path, str(versions[0])) if versions else None
