"""DeepLab-v2 and DeepLab-v3+ (tiny ResNet-50s) train through train() as unimodal models and
as SSMA's experts under every framework, and restore for evaluation."""

import numpy as np
import pytest

from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_records

TINY_RESNET = {"backbone": "resnet50", "backbone_units": [1, 1, 1, 1],
               "width_multiplier": 0.0625}
UNIMODAL = ("supervised", "mean_teacher", "cps")
MULTIMODAL = ("supervised_moddrop", "m3l", "mean_teacher_moddrop", "cps")
CASES = [(model, framework) for model in ("deeplabv2", "deeplabv3plus") for framework in UNIMODAL]
CASES += [(f"ssma_{model}", framework) for model in ("deeplabv2", "deeplabv3plus")
          for framework in MULTIMODAL]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("model, framework", CASES)
def test_deeplab_trains_under_every_framework(tmp_path, records, model, framework):
    if model.startswith("ssma_"):
        keys = {**TINY_RESNET, "model": "SSMA", "expert": model[5:], "stage": "finetune"}
        modalities = ["rgb", "depth"]
    else:
        keys, modalities = {**TINY_RESNET, "model": model}, ["rgb"]
    config = tiny_config(tmp_path, records, keys, framework=framework, modalities=modalities,
                         unlabeled_data=records, max_iteration=2, summary_step=0)
    train(config)
    restored = restore_eval_model(config)
    inputs = {"rgb": np.ones((1, 32, 64, 3), "float32"),
              "depth": np.ones((1, 32, 64, 1), "float32")}
    logits = restored({m: inputs[m] for m in modalities}, training=False)["logits"]
    assert tuple(logits.shape) == (1, 32, 64, 2) and np.all(np.isfinite(logits))
