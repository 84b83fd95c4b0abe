"""Components defined only in this file plug in through the registries, with no package
file edited: a backbone registers itself with its own config key and trains through
train() as a unimodal DeepLab-v3+ and as SSMA's experts."""

import numpy as np
import pytest

from ssma_tf.errors import ConfigError
from ssma_tf.models.layers import conv_bn
from ssma_tf.registry import Key, register_backbone
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_records


def little_pyramid(image, *, channels=4):
    """Conv-BN-ReLU stages: P2..P5 at strides 4, 8, 16, 16, `channels` each."""
    x = conv_bn(image, channels, 3, strides=2, name="little_stem")
    pyramid = {}
    for level, stride in (("P2", 2), ("P3", 2), ("P4", 2), ("P5", 1)):
        x = conv_bn(x, channels, 3, strides=stride, name=f"little_{level}")
        pyramid[level] = x
    return pyramid


register_backbone("little", little_pyramid, keys={
    "little_channels": Key("int", 4, "channels of every stage", arg="channels")})
LITTLE = {"model": "deeplabv3plus", "backbone": "little", "little_channels": 6,
          "low_level_channels": 4, "aspp_rates": [1, 2, 3]}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


def _stem_kernel(model):
    return model.get_layer("encoder").get_layer("little_stem").get_weights()[0]


def test_a_backbone_defined_here_declares_its_key_and_trains_as_a_unimodal_model(
        tmp_path, records):
    config = tiny_config(tmp_path, records, LITTLE, max_iteration=2, summary_step=0)
    assert config.little_channels == 6
    train(config)
    model = restore_eval_model(config)
    assert _stem_kernel(model).shape == (3, 3, 3, 6)       # little_channels reached it
    with pytest.raises(ConfigError, match="key 'little_channels' is read by backbone little"):
        tiny_config(tmp_path, records, {"model": "deeplabv3plus"}, little_channels=6)


def test_the_backbone_serves_as_ssma_experts_copied_from_stage_1(tmp_path, records):
    experts = {}
    for modality in ("rgb", "depth"):
        experts[modality] = tiny_config(tmp_path, records, LITTLE, modalities=[modality],
                                        checkpoint=str(tmp_path / modality), max_iteration=2,
                                        summary_step=0)
        train(experts[modality])
    fusion = tiny_config(tmp_path, records, {**LITTLE, "model": "SSMA",
                                             "expert": "deeplabv3plus"},
                         modalities=["rgb", "depth"], checkpoint1=experts["rgb"].checkpoint,
                         checkpoint2=experts["depth"].checkpoint,
                         checkpoint=str(tmp_path / "ssma"), max_iteration=2, summary_step=0)
    train(fusion)
    fused = restore_eval_model(fusion)
    for modality, config in experts.items():
        expert = fused.get_layer(f"expert_{modality}")
        assert not expert.trainable
        for a, b in zip(restore_eval_model(config).get_layer("encoder").get_weights(),
                        expert.get_weights()):
            np.testing.assert_array_equal(a, b)        # copied, then frozen
    assert {"ssma_aspp_gate", "ssma_low_level_gate"} <= {layer.name for layer in fused.layers}
