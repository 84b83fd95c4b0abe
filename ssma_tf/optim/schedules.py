"""Learning-rate schedules: linear warm-up, then polynomial ("poly") or cosine decay, or
constant."""

import math

import keras
from keras import ops


class WarmupPoly(keras.optimizers.schedules.LearningRateSchedule):
    """lr(t) = end + (base - end) * (1 - t/decay_steps)^power after a linear warm-up.

    SSMA's TF1 code used tf.train.polynomial_decay with its default end_learning_rate
    1e-4 (so lr<=1e-4 stayed constant or rose); our config default is end 0.0, set
    `end_learning_rate: 1.0e-4` to replicate the original.
    """

    def __init__(self, base_lr, decay_steps, power=0.9, end_lr=0.0, warmup_steps=0):
        self.base_lr = float(base_lr)
        self.decay_steps = max(int(decay_steps), 1)
        self.power = float(power)
        self.end_lr = float(end_lr)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        frac = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        poly = self.end_lr + (self.base_lr - self.end_lr) * ops.power(1.0 - frac, self.power)
        if self.warmup_steps <= 0:
            return poly
        warm = self.base_lr * (step + 1.0) / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, poly)

    def get_config(self):
        return {"base_lr": self.base_lr, "decay_steps": self.decay_steps, "power": self.power,
                "end_lr": self.end_lr, "warmup_steps": self.warmup_steps}


class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """lr(t) = base after a linear warm-up (base * (t+1) / warmup_steps for t < warmup)."""

    def __init__(self, base_lr, warmup_steps=0):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        constant = ops.full_like(step, self.base_lr)
        if self.warmup_steps <= 0:
            return constant
        warm = self.base_lr * (step + 1.0) / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, constant)

    def get_config(self):
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps}


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """lr(t) = end + (base - end) * (1 + cos(pi * t/decay_steps)) / 2 after a linear warm-up
    (PyTorch's CosineAnnealingLR to eta_min `end_lr`, per step; `end_lr` from decay_steps on)."""

    def __init__(self, base_lr, decay_steps, end_lr=0.0, warmup_steps=0):
        self.base_lr = float(base_lr)
        self.decay_steps = max(int(decay_steps), 1)
        self.end_lr = float(end_lr)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        frac = ops.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        cosine = self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1.0 + ops.cos(math.pi * frac))
        if self.warmup_steps <= 0:
            return cosine
        warm = self.base_lr * (step + 1.0) / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"base_lr": self.base_lr, "decay_steps": self.decay_steps, "end_lr": self.end_lr,
                "warmup_steps": self.warmup_steps}


SCHEDULES = ("poly", "constant", "cosine")


def make_schedule(kind, base_lr, decay_steps, power=0.9, end_lr=0.0, warmup_steps=0):
    """`kind` "poly" (WarmupPoly), "cosine" (WarmupCosine; `power` unused) or "constant"
    (WarmupConstant; decay arguments unused)."""
    if kind == "poly":
        return WarmupPoly(base_lr, decay_steps, power, end_lr, warmup_steps)
    if kind == "cosine":
        return WarmupCosine(base_lr, decay_steps, end_lr, warmup_steps)
    if kind == "constant":
        return WarmupConstant(base_lr, warmup_steps)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
