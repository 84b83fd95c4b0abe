"""Per-group optimizers (encoder / decoder / norm), each with its own poly LR multiplier.

One Keras optimizer per non-empty variable group, as M3L does with its AdamW param groups.
Under mixed_float16 every optimizer is wrapped in a LossScaleOptimizer (also on resume, so
checkpoints always match) and the loss is scaled once; gradients of the other groups are
rescaled to their own loss scale before they are applied.

The settings come from the config unless overridden per network (`OVERRIDES`), so a second
network, e.g. s4GAN's discriminator, can have its own learning rate, betas and schedule:
    GroupOptimizer(config, discriminator, name="discriminator", learning_rate=1e-4,
                   beta_1=0.9, beta_2=0.99)
"""

import keras
import tensorflow as tf

from ssma_tf.optim.schedules import SCHEDULES, make_schedule

GROUPS = ("encoder", "norm", "decoder")
ENCODER_PREFIXES = ("encoder", "expert_", "mit", "backbone")
_NORM_TYPES = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
               keras.layers.GroupNormalization)


def _is_norm(layer):
    return isinstance(layer, _NORM_TYPES) or "norm" in type(layer).__name__.lower()


def split_variables(model):
    """{group: [trainable variables]}: encoder layers or sub-models (named encoder*, expert_*,
    mit*, backbone*) give `encoder` and (their normalisation layers) `norm`; the rest
    `decoder`. Layers inside the encoder named with one of the model's
    `encoder_head_prefixes` (DeepLab-v3+'s ASPP and low-level projection, which its encoder
    holds) train with the decoder, as the references' head parameter group."""
    groups = {name: [] for name in GROUPS}
    seen = {id(v) for v in model.non_trainable_weights}
    head = tuple(getattr(model, "encoder_head_prefixes", ()))
    for layer in model.layers:
        if layer.name.startswith(ENCODER_PREFIXES):
            for sub in layer._flatten_layers(include_self=False, recursive=True):
                group = "decoder" if head and sub.name.startswith(head) else (
                    "norm" if _is_norm(sub) else None)
                if group:
                    for var in sub.trainable_weights:
                        if id(var) not in seen:
                            seen.add(id(var))
                            groups[group].append(var)
            for var in layer.trainable_weights:
                if id(var) not in seen:
                    seen.add(id(var))
                    groups["encoder"].append(var)
    for var in model.trainable_weights:
        if id(var) not in seen:
            seen.add(id(var))
            groups["decoder"].append(var)
    return {name: vars_ for name, vars_ in groups.items() if vars_}


KINDS = ("adam", "adamw", "sgd")
BETA_1, BETA_2 = 0.9, 0.999     # Adam / AdamW defaults (Keras's and PyTorch's); no config key
OVERRIDES = ("optimizer", "learning_rate", "beta_1", "beta_2", "epsilon", "momentum",
             "weight_decay", "power", "end_learning_rate", "warmup_steps", "schedule",
             "lr_multipliers", "nesterov")


def resolve_settings(config, **overrides):
    """{setting: value} of one network's optimizer: the config's values (optimizer,
    learning_rate, adam_epsilon as epsilon, momentum, weight_decay, power, end_learning_rate,
    warmup_steps, lr_multipliers; beta_1/beta_2 BETA_1/BETA_2, schedule "poly", SGD nesterov
    false) with
    `overrides` (names in OVERRIDES) applied. TypeError for an unknown name, ValueError for
    an unknown optimizer, schedule or group."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"unknown optimizer setting {unknown[0]!r}; known: "
                        f"{', '.join(OVERRIDES)}")
    settings = {"optimizer": config.optimizer, "learning_rate": config.learning_rate,
                "beta_1": BETA_1, "beta_2": BETA_2, "epsilon": config.adam_epsilon,
                "momentum": config.momentum, "weight_decay": config.weight_decay,
                "power": config.power, "end_learning_rate": config.end_learning_rate,
                "warmup_steps": config.warmup_steps, "schedule": "poly",
                "lr_multipliers": dict(config.lr_multipliers or {}), "nesterov": False}
    settings.update(overrides)
    if settings["optimizer"] not in KINDS:
        raise ValueError(f"optimizer must be one of {', '.join(KINDS)}, got "
                         f"{settings['optimizer']!r}")
    if settings["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                         f"{settings['schedule']!r}")
    groups = sorted(set(settings["lr_multipliers"]) - set(GROUPS))
    if groups:
        raise ValueError(f"lr_multipliers: unknown group {groups[0]!r}, expected "
                         f"{', '.join(GROUPS)}")
    return settings


def keras_optimizer(settings, learning_rate):
    """One Keras optimizer of kind `settings["optimizer"]` (adam | adamw | sgd)."""
    kind = settings["optimizer"]
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate, beta_1=settings["beta_1"],
                                     beta_2=settings["beta_2"], epsilon=settings["epsilon"])
    if kind == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=settings["weight_decay"],
                                      beta_1=settings["beta_1"], beta_2=settings["beta_2"],
                                      epsilon=settings["epsilon"])
    return keras.optimizers.SGD(learning_rate, momentum=settings["momentum"],
                                nesterov=settings["nesterov"],
                                weight_decay=settings["weight_decay"] or None)


class GroupOptimizer:
    """The optimizers of one model, one per variable group; call `build` inside the scope.

    `overrides` (names in OVERRIDES) replace the config's settings for this model only;
    `settings` holds the resolved values, `schedules` each group's learning-rate schedule
    (poly or cosine decay over `max_iteration` steps, or constant; after `warmup_steps`)."""

    def __init__(self, config, model, name="model", **overrides):
        self.config = config
        self.model = model
        self.name = name
        self.settings = resolve_settings(config, **overrides)
        self.groups = split_variables(model)
        multipliers = self.settings["lr_multipliers"]
        self.optimizers, self.schedules = {}, {}
        for group in self.groups:
            mult = float(multipliers.get(group, 1.0))
            schedule = make_schedule(
                self.settings["schedule"], self.settings["learning_rate"] * mult,
                config.max_iteration, self.settings["power"],
                self.settings["end_learning_rate"] * mult, self.settings["warmup_steps"])
            optimizer = keras_optimizer(self.settings, schedule)
            if config.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizers[group] = optimizer
            self.schedules[group] = schedule

    def build(self):
        """Create the slot variables now (needed before a distributed custom step)."""
        for group, optimizer in self.optimizers.items():
            optimizer.build(self.groups[group])

    @property
    def variables(self):
        return [v for vars_ in self.groups.values() for v in vars_]

    def inner(self, group=None):
        """The Keras optimizer of `group` (default: the first), without loss scaling."""
        optimizer = self.optimizers[group or next(iter(self.optimizers))]
        return getattr(optimizer, "inner_optimizer", optimizer)

    def learning_rate(self, group=None):
        """Current learning rate of `group` (default: the first group)."""
        return self.inner(group).learning_rate

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
