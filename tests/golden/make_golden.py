"""Writes the golden checkpoints beside this file with TODAY's code (cases.py says which).

    python tests/golden/make_golden.py --force

The files pin the checkpoint contract: checkpoints are keyed by layer names and
`variable.path` (training/checkpoints.py), and tests/test_golden_checkpoints.py restores
these old files into today's models. Re-running this recreates every file and so hides the
very breakage the test exists to catch: re-run it only on purpose, together with a
migration that keeps older checkpoints restoring (hence --force).

Each case: the framework built from its config, every variable of its models set from a
seeded generator (initial value + noise, so no two same-shaped variables are alike; a
mean-teacher teacher and CPS's second network get their own), saved at step STEP as train()
saves (CheckpointManager, checkpoint_number) with the run_info.json train() writes, and
expected.npz: a fixed input and the eval model's inference outputs. The MiT cases keep only
the model (an init_checkpoint); ssma_experts has no checkpoint of its own: its outputs are
the stage-1 encoders' (adapnet_pp, adapnet_pp_depth) that SSMA's experts must reproduce.
"""

import argparse
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]   # this checkout's ssma_tf, then golden.cases

import keras
import numpy as np
import tensorflow as tf

from golden import cases
from ssma_tf.config import config_from_dict
from ssma_tf.data.schema import ModalitySpec
from ssma_tf.frameworks.build import build_framework
from ssma_tf.training import checkpoints
from ssma_tf.training.run_info import write_run_info

SPECS = {"rgb": ModalitySpec("rgb", "color", 3, "uint8"),
         "depth": ModalitySpec("depth", "raw", 1, "uint16")}
NOISE = 0.05


def fixed_inputs(modalities, seed):
    """{modality: [1, H, W, C] float32}: rgb ~ N(0, 1) (normalised colour), depth ~ U(0, 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in modalities:
        shape = (1, *cases.SHAPE, SPECS[name].channels)
        out[name] = (rng.standard_normal(shape) if name == "rgb" else rng.random(shape))
        out[name] = out[name].astype(np.float32)
    return out


def set_weights(model, seed):
    """Every float variable = its value + seeded noise (variances kept positive)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if not variable.dtype.startswith("float"):
            continue
        value = variable.numpy() + NOISE * rng.standard_normal(variable.shape)
        if "variance" in variable.path:
            value = np.abs(value)
        variable.assign(value.astype(variable.dtype))


def save_expected(name, inputs, outputs):
    np.savez_compressed(cases.expected_path(name), **{f"input/{k}": v for k, v in inputs.items()},
             **{f"output/{k}": np.asarray(v) for k, v in outputs.items()})


def recorded_config(name):
    """The config run_info.json records: the case's training run, saved to tests/golden/<name>."""
    values = {k: v for k, v in cases.CASES[name].items() if k not in cases.PATH_KEYS}
    return config_from_dict({**values, "checkpoint": os.path.join("tests", "golden", name)},
                            f"golden/{name}")


def write_case(name, seed):
    """Build, set, save case `name`; returns its eval model."""
    config = cases.config(name)
    folder = config.checkpoint or config.init_checkpoint
    keras.utils.set_random_seed(seed)
    framework = build_framework(config, tf.distribute.get_strategy(), {})
    items = framework.checkpoint_items()
    for offset, model in enumerate(v for v in items.values() if isinstance(v, keras.Model)):
        set_weights(model, seed * 100 + offset)
    if config.init_checkpoint:
        items = {"model": items["model"]}
    framework.step.assign(cases.STEP)
    checkpoint = tf.train.Checkpoint(step=framework.step, **checkpoints.trackable(items))
    tf.train.CheckpointManager(checkpoint, folder, max_to_keep=1).save(
        checkpoint_number=cases.STEP)
    write_run_info(folder, recorded_config(name),
                   {m: SPECS[m].to_json() for m in config.modalities},
                   {"resumed_from": None, "start_step": 0})
    inputs = fixed_inputs(config.modalities, seed)
    save_expected(name, inputs, framework.eval_model(inputs, training=False))
    return framework.eval_model


def write_experts(name, stage1, seed):
    """expected.npz of SSMA's experts: the stage-1 models' encoders on a fixed input."""
    config = cases.config(name)
    os.makedirs(os.path.join(cases.GOLDEN, name), exist_ok=True)
    inputs = fixed_inputs(config.modalities, seed)
    outputs = {}
    for index, modality in enumerate(config.modalities):
        source = os.path.basename(getattr(config, f"checkpoint{index + 1}"))
        encoder = stage1[source].get_layer("encoder")
        for key, value in encoder(inputs[modality], training=False).items():
            outputs[f"expert_{modality}/{key}"] = value
    save_expected(name, inputs, outputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true",
                        help="overwrite the golden files (only with a migration)")
    args = parser.parse_args()
    existing = [n for n in cases.CASES if os.path.exists(cases.expected_path(n))]
    if existing and not args.force:
        sys.exit(f"golden files exist ({', '.join(existing)}); see the docstring, then --force")
    for name in cases.CASES:
        shutil.rmtree(os.path.join(cases.GOLDEN, name), ignore_errors=True)
    models = {}
    for seed, name in enumerate(cases.CASES, start=1):
        config = cases.config(name)
        if config.checkpoint1:
            write_experts(name, models, seed)
        else:
            models[name] = write_case(name, seed)
        print("wrote", name)


if __name__ == "__main__":
    main()
