"""Supervised training: labeled batches only, weighted loss over the model's outputs."""

from ssma_tf.frameworks.base import Framework
from ssma_tf.registry import register_framework


class Supervised(Framework):
    """One model, one GroupOptimizer, the supervised loss."""

    def build(self):
        self.model = self.make_model()
        self.optimizer = self.make_optimizer(self.model)

    def checkpoint_items(self):
        return {"model": self.model, **self.optimizer.checkpoint_items()}

    @property
    def eval_model(self):
        return self.model

    def prepare_inputs(self, inputs):
        """Hook for subclasses (e.g. modality dropout) to alter the labeled inputs."""
        return inputs

    def networks(self):
        return [(self.model, self.optimizer)]

    def train_step(self, labeled, unlabeled=None):
        inputs, labels = labeled
        return self.supervised_only_step((self.prepare_inputs(inputs), labels))


register_framework("supervised", Supervised)
