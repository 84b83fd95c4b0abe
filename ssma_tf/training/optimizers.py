"""Per-group optimizers (encoder / decoder / norm), each with its own poly LR multiplier.

One Keras optimizer per non-empty variable group, as M3L does with its AdamW param groups.
Under mixed_float16 every optimizer is wrapped in a LossScaleOptimizer (also on resume, so
checkpoints always match) and the loss is scaled once; gradients of the other groups are
rescaled to their own loss scale before they are applied.
"""

import keras
import tensorflow as tf

from ssma_tf.training.schedules import WarmupPoly

GROUPS = ("encoder", "norm", "decoder")
ENCODER_PREFIXES = ("encoder", "expert_", "mit", "backbone")
_NORM_TYPES = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
               keras.layers.GroupNormalization)


def _is_norm(layer):
    return isinstance(layer, _NORM_TYPES) or "norm" in type(layer).__name__.lower()


def split_variables(model):
    """{group: [trainable variables]}: encoder layers or sub-models (named encoder*, expert_*,
    mit*, backbone*) give `encoder` and (their normalisation layers) `norm`; the rest
    `decoder`."""
    groups = {name: [] for name in GROUPS}
    seen = {id(v) for v in model.non_trainable_weights}
    for layer in model.layers:
        if layer.name.startswith(ENCODER_PREFIXES):
            for sub in layer._flatten_layers(include_self=False, recursive=True):
                if _is_norm(sub):
                    for var in sub.trainable_weights:
                        if id(var) not in seen:
                            seen.add(id(var))
                            groups["norm"].append(var)
            for var in layer.trainable_weights:
                if id(var) not in seen:
                    seen.add(id(var))
                    groups["encoder"].append(var)
    for var in model.trainable_weights:
        if id(var) not in seen:
            seen.add(id(var))
            groups["decoder"].append(var)
    return {name: vars_ for name, vars_ in groups.items() if vars_}


def make_optimizer(config, learning_rate):
    """One optimizer of type `config.optimizer` (adam | adamw | sgd)."""
    kind = config.optimizer
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate, epsilon=1e-8)
    if kind == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay,
                                      epsilon=1e-8)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=config.weight_decay
                                or None)


class GroupOptimizer:
    """The optimizers of one model, one per variable group; call `build` inside the scope."""

    def __init__(self, config, model, name="model"):
        self.config = config
        self.model = model
        self.name = name
        self.groups = split_variables(model)
        multipliers = dict(config.lr_multipliers or {})
        self.optimizers = {}
        for group in self.groups:
            mult = float(multipliers.get(group, 1.0))
            schedule = WarmupPoly(config.learning_rate * mult, config.max_iteration,
                                  config.power, config.end_learning_rate * mult,
                                  config.warmup_steps)
            optimizer = make_optimizer(config, schedule)
            if config.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizers[group] = optimizer

    def build(self):
        """Create the slot variables now (needed before a distributed custom step)."""
        for group, optimizer in self.optimizers.items():
            optimizer.build(self.groups[group])

    @property
    def variables(self):
        return [v for vars_ in self.groups.values() for v in vars_]

    def learning_rate(self, group=None):
        """Current learning rate of `group` (default: the first group)."""
        optimizer = self.optimizers[group or next(iter(self.optimizers))]
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        return inner.learning_rate

    def scale_loss(self, loss):
        """Loss multiplied by the loss scale (identity without mixed_float16)."""
        return next(iter(self.optimizers.values())).scale_loss(loss)

    def apply(self, tape, loss):
        """Differentiate `loss` (recorded on `tape`) and step every group."""
        variables = self.variables
        with tape:  # the scaling must be recorded too, or mixed_float16 gets no gradients
            scaled = self.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        first = next(iter(self.optimizers.values()))
        start = 0
        for group, optimizer in self.optimizers.items():
            count = len(self.groups[group])
            pairs = list(zip(grads[start:start + count], variables[start:start + count]))
            start += count
            if optimizer is not first and isinstance(optimizer,
                                                     keras.optimizers.LossScaleOptimizer):
                ratio = optimizer.dynamic_scale / first.dynamic_scale
                pairs = [(g if g is None else g * tf.cast(ratio, g.dtype), v) for g, v in pairs]
            optimizer.apply_gradients(pairs)

    def checkpoint_items(self, prefix="optimizer"):
        return {f"{prefix}_{group}": opt for group, opt in self.optimizers.items()}
