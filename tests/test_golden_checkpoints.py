"""Golden checkpoints (tests/golden, written once by golden/make_golden.py) keep restoring.

Checkpoints are keyed by layer names and variable paths, so a rename that breaks old runs'
checkpoints fails here. Each case's config dict (golden/cases.py) is rebuilt through the
config system and today's entry points, restored, and its outputs on the stored input must
match the stored outputs. Fix the code, or migrate old checkpoints; do not regenerate.
"""

import numpy as np
import pytest
import tensorflow as tf

from golden import cases
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks.build import build_framework
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import initialise


def restore(config):
    """The eval model through the entry point the case's path key names."""
    if config.checkpoint:
        return restore_eval_model(config)       # train()'s checkpoint: evaluate, export, predict
    framework = build_framework(config, tf.distribute.get_strategy(), {})
    initialise(framework, config)          # a fresh run: init_checkpoint, or SSMA's experts
    return framework.eval_model


def outputs(config, model, inputs):
    """{name: array}: the model's inference outputs, or with checkpoint1 SSMA's experts'."""
    if "checkpoint1" not in config or not config.checkpoint1:
        return model(inputs, training=False)
    return {f"expert_{m}/{key}": value for m in config.modalities
            for key, value in model.get_layer(f"expert_{m}")(inputs[m], training=False).items()}


def stored(name, kind):
    """The case's stored "input" or "output" arrays, by name."""
    with np.load(cases.expected_path(name)) as data:
        return {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(kind + "/")}


@pytest.mark.parametrize("name", list(cases.CASES))
def test_golden_checkpoint_restores_with_the_same_outputs(name):
    config = cases.config(name)
    actual = outputs(config, restore(config), stored(name, "input"))
    expected = stored(name, "output")
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(actual[key]), value, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name}: output {key}")


@pytest.mark.parametrize("case, change", [("adapnet_pp", {"num_classes": 4}),
                                          ("segformer", {"init_checkpoint": None})])
def test_restoring_into_another_model_fails_clearly(case, change):
    config = cases.config(case).replace(**change, checkpoint=cases.config("adapnet_pp").checkpoint)
    with pytest.raises(ConfigError, match=r"golden/adapnet_pp/ckpt-7 does not fit the"):
        restore_eval_model(config)
