"""The models are pure Keras 3: build and predict them under KERAS_BACKEND=jax."""

import json

from model_testing import run_under_jax

# Each case: (builder import path, builder call, input channels); prints output shapes.
CASES = {
    "adapnet_pp": ("ssma_tf.models.adapnet_pp:build_adapnet_pp",
                   "build(5, width=0.125, units=(1, 1, 1, 1))", {"rgb": 3}),
    "ssma": ("ssma_tf.models.ssma:build_ssma",
             "build(5, {'rgb': 3, 'depth': 1}, width=0.125, units=(1, 1, 1, 1))",
             {"rgb": 3, "depth": 1}),
}

SCRIPT = """
import importlib, json, sys
import numpy as np
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
shapes = {}
for name, (path, call, channels) in json.loads(sys.argv[1]).items():
    module, attr = path.split(":")
    build = getattr(importlib.import_module(module), attr)
    model = eval(call)
    x = {m: np.zeros((1, 32, 48, c), "float32") for m, c in channels.items()}
    shapes[name] = {k: list(v.shape) for k, v in model.predict(x, verbose=0).items()}
print("SHAPES" + json.dumps(shapes))
"""


def test_models_build_and_predict_under_jax():
    stdout = run_under_jax(SCRIPT, json.dumps(CASES))
    line = next(text for text in stdout.splitlines() if text.startswith("SHAPES"))
    shapes = json.loads(line[len("SHAPES"):])
    assert shapes["adapnet_pp"] == {k: [1, 32, 48, 5] for k in ("logits", "aux1", "aux2")}
    assert shapes["ssma"] == {"logits": [1, 32, 48, 5]}
