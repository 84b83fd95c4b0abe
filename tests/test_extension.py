"""Components defined only in this file plug in through the registries, with no package
file edited: a backbone registers itself with its own config key and trains through
train() as a unimodal DeepLab-v3+ and as SSMA's experts; a framework registers itself with
its own key and trains a second network on its own optimizer settings, keeping the best
checkpoint by validation mIoU."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.frameworks.base import Framework
from ssma_tf.frameworks.build import build_framework
from ssma_tf.models.layers import conv_bn
from ssma_tf.registry import Key, register_backbone, register_framework
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


class CriticFramework(Framework):
    """Supervised segmentation, plus a critic network (a stand-in for a GAN discriminator)
    on its own SGD at a constant learning rate, learning each image's foreground share from
    the segmenter's probabilities."""

    def build(self):
        self.model = self.make_model()
        probs = keras.Input((None, None, self.config.num_classes))
        share = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(probs))
        self.critic = keras.Model(probs, share, name="critic")
        self.optimizer = self.make_optimizer(self.model)
        self.critic_optimizer = self.make_optimizer(
            self.critic, name="critic", optimizer="sgd", schedule="constant",
            learning_rate=self.config.critic_learning_rate)

    def checkpoint_items(self):
        return {"model": self.model, "critic": self.critic,
                **self.optimizer.checkpoint_items(),
                **self.critic_optimizer.checkpoint_items("critic_optimizer")}

    @property
    def eval_model(self):
        return self.model

    def networks(self):
        return [(self.model, self.optimizer)]

    def train_step(self, labeled, unlabeled=None):
        inputs, labels = labeled
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            loss = self.supervised_loss(labels, outputs)
        self.optimizer.apply(tape, loss)
        probs = tf.nn.softmax(tf.stop_gradient(outputs["logits"]))
        share = tf.reduce_mean(tf.cast(labels == 1, tf.float32), axis=[1, 2])[:, None]
        with tf.GradientTape() as tape:
            error = tf.reduce_sum((self.critic(probs) - share) ** 2) / self.global_batch_size
        self.critic_optimizer.apply(tape, error)
        return {"loss": loss, "critic_loss": error,
                "learning_rate": self.optimizer.learning_rate()}


register_framework("critic_test", CriticFramework, keys={
    "critic_learning_rate": Key("float", 0.05, "the critic's SGD learning rate")})


def test_a_framework_defined_here_trains_a_second_network_and_keeps_the_best(
        tmp_path, records):
    config = tiny_config(tmp_path, records, framework="critic_test", critic_learning_rate=0.02,
                         max_iteration=4, eval_step=2, val_data=records, summary_step=0)
    framework = build_framework(config, channels={"rgb": 3})
    critic = framework.critic_optimizer.inner()
    assert isinstance(critic, keras.optimizers.SGD)
    assert float(critic.learning_rate) == pytest.approx(0.02)      # constant, its own
    assert isinstance(framework.optimizer.inner(), keras.optimizers.Adam)
    folder = train(config)
    reader = tf.train.load_checkpoint(folder)
    iterations = [k for k in reader.get_variable_to_shape_map()
                  if k.startswith("critic_optimizer") and "iteration" in k]
    assert iterations and all(reader.get_tensor(k) == 4 for k in iterations)
    with open(os.path.join(folder, "best", "best.json")) as handle:
        best = json.load(handle)
    assert best["step"] in (2, 4) and 0.0 <= best["miou"] <= 1.0
    model = restore_eval_model(config, os.path.join(folder, "best"))
    assert model.get_layer("encoder") is not None
    with pytest.raises(ConfigError, match="key 'critic_learning_rate' is read by framework "
                                          "critic_test"):
        tiny_config(tmp_path, records, critic_learning_rate=0.1)
