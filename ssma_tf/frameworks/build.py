"""build_framework: the config's framework with its step, models and optimizers built.

The one way to make a framework (the trainer, tools, tests): it sets the Keras dtype
policy from `mixed_precision`, creates `framework.step` and runs `build()` inside
`strategy.scope()`. The default model builder is the model factory's `build_model(config,
channels, **options)`, so a framework's `model_builder(features=...)` reaches it. With
`sync_bn` under several replicas every model it builds gets synchronised BatchNorm.
"""

import keras
import tensorflow as tf

from ssma_tf.frameworks import get_framework
from ssma_tf.models.factory import build_model
from ssma_tf.models.layers import synchronize_batch_norm


def set_precision(config):
    """The Keras global dtype policy of `config.mixed_precision` ("none": float32)."""
    policy = "float32" if config.mixed_precision == "none" else config.mixed_precision
    keras.mixed_precision.set_global_policy(policy)


def default_model_builder(config, channels=None):
    """model_builder(**options) -> build_model(config, channels, **options)."""
    def builder(**options):
        return build_model(config, channels, **options)
    return builder


def synchronized(model_builder):
    """`model_builder` whose models have every BatchNormalization synchronised."""
    def builder(**options):
        return synchronize_batch_norm(model_builder(**options))
    return builder


def build_framework(config, strategy=None, channels=None, model_builder=None, *,
                    framework_class=None):
    """The `config.framework` framework (or a `framework_class`, e.g. a subclass under
    test), built inside `strategy.scope()` (default: the current strategy) with its `step`
    variable; models from `model_builder` (default: `build_model` with `channels`,
    {modality: C}, default per modality name)."""
    strategy = strategy or tf.distribute.get_strategy()
    set_precision(config)
    builder = model_builder or default_model_builder(config, channels)
    if config.sync_bn and strategy.num_replicas_in_sync > 1:
        builder = synchronized(builder)
    framework = (framework_class or get_framework(config.framework))(config, builder)
    with strategy.scope():
        framework.step = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        framework.build()
    return framework
