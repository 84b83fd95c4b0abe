"""Supervised training: labeled batches only, weighted loss over the model's outputs."""

import tensorflow as tf

from ssma_tf.frameworks.base import Framework


class Supervised(Framework):
    """One model, one GroupOptimizer, the supervised loss."""

    def build(self):
        self.model = self.model_builder()
        self.optimizer = self.make_optimizer(self.model)

    def checkpoint_items(self):
        return {"model": self.model, **self.optimizer.checkpoint_items()}

    @property
    def eval_model(self):
        return self.model

    def prepare_inputs(self, inputs):
        """Hook for subclasses (e.g. modality dropout) to alter the labeled inputs."""
        return inputs

    def train_step(self, labeled, unlabeled=None):
        inputs, labels = labeled
        inputs = self.prepare_inputs(inputs)
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            loss = self.supervised_loss(labels, outputs)
            loss += self.penalty_loss(self.model, outputs, self.global_batch_size)
        self.optimizer.apply(tape, loss)
        return {"loss": loss, "learning_rate": self.optimizer.learning_rate()}
