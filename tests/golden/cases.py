"""The golden checkpoint cases: one config dict each, the single source of make_golden.py
(which wrote the files once) and tests/test_golden_checkpoints.py (which restores them).

Later refactors may change the builders, but these dicts must keep loading through
config_from_dict and restoring the files beside them. Path keys name folders here:

  checkpoint       a checkpoint as train() writes it (step + every framework item) and its
                   run_info.json; restored by checkpoints.restore_eval_model (evaluate, export,
                   predict)
  init_checkpoint  step + the model only (the MiT cases: their Adam slots would triple the
                   size); restored through train()'s fresh-run path, trainer.initialise
  checkpoint1/2    SSMA's stage-1 AdapNet++ experts (the adapnet_pp cases); trainer.initialise
"""

import os

from ssma_tf.config import config_from_dict

GOLDEN = os.path.dirname(os.path.abspath(__file__))
PATH_KEYS = ("checkpoint", "init_checkpoint", "checkpoint1", "checkpoint2")
STEP = 7            # the step every golden checkpoint was saved at (its ckpt-7 files)
SHAPE = (32, 32)    # height, width of the stored inputs

SIZE = {"num_classes": 3, "height": SHAPE[0], "width": SHAPE[1]}
ADAPNET = {**SIZE, "model": "AdapNet_pp", "width_multiplier": 0.015625,
           "backbone_units": [1, 1, 1, 1]}
MIT = {**SIZE, "backbone": "tiny", "decoder_dim": 8}

CASES = {
    "adapnet_pp": {**ADAPNET, "checkpoint": "adapnet_pp"},
    "adapnet_pp_depth": {**ADAPNET, "modalities": ["depth"], "checkpoint": "adapnet_pp_depth"},
    "ssma": {**ADAPNET, "model": "SSMA", "stage": "fusion", "checkpoint": "ssma"},
    "ssma_experts": {**ADAPNET, "model": "SSMA", "stage": "fusion",
                     "checkpoint1": "adapnet_pp", "checkpoint2": "adapnet_pp_depth"},
    "segformer": {**MIT, "model": "segformer", "init_checkpoint": "segformer"},
    "linearfusion": {**MIT, "model": "linearfusion", "init_checkpoint": "linearfusion"},
    "tokenfusion": {**MIT, "model": "tokenfusion", "init_checkpoint": "tokenfusion"},
    "mean_teacher": {**ADAPNET, "framework": "mean_teacher", "checkpoint": "mean_teacher"},
    "cps": {**ADAPNET, "framework": "cps", "checkpoint": "cps"},
}


def config(name, base=GOLDEN):
    """The Config of case `name`, its path keys joined to `base`."""
    values = {key: os.path.join(base, value) if key in PATH_KEYS else value
              for key, value in CASES[name].items()}
    return config_from_dict(values, f"golden/{name}")


def expected_path(name):
    """The case's stored inputs ("input/<modality>") and outputs ("output/<name>")."""
    return os.path.join(GOLDEN, name, "expected.npz")
