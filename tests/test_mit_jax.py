"""LinearFusion and Segformer under KERAS_BACKEND=jax (a subprocess: the backend is fixed at
import)."""

import pytest

from model_testing import run_under_jax

SCRIPT = """
import numpy as np, jax, keras
from ssma_tf.models.linear_fusion import build_linear_fusion
from ssma_tf.models.segformer import build_segformer
assert keras.backend.backend() == "jax"
model = build_linear_fusion(4, {"rgb": 3, "depth": 1}, variant="tiny", decoder_dim=8)
x = {"rgb": np.random.rand(2, 64, 96, 3).astype("float32"),
     "depth": np.random.rand(2, 64, 96, 1).astype("float32")}
x["depth"][1] = 0.0
out = model.predict(x, verbose=0)
assert {k: v.shape for k, v in out.items()} == {k: (2, 64, 96, 4) for k in
    ("logits", "logits_rgb", "logits_depth")}, out.keys()
assert all(np.isfinite(v).all() for v in out.values())
np.testing.assert_allclose(out["logits"], (out["logits_rgb"] + out["logits_depth"]) / 2, atol=1e-5)
seg = build_segformer(3, variant="tiny", decoder_dim=8)
seg_out = seg.predict({"rgb": np.zeros((1, 96, 64, 3), "float32")}, verbose=0)
assert seg_out["logits"].shape == (1, 96, 64, 3)
print("JAX_OK")
"""


@pytest.mark.slow
def test_models_run_under_jax():
    assert "JAX_OK" in run_under_jax(SCRIPT)
