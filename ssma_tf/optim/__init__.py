"""Optimizers and learning-rate schedules, below both `frameworks` and `training`.

`GroupOptimizer(config, model, name=..., **overrides)` is the optimizer of one network; a
framework builds it with `Framework.make_optimizer(model, name, **overrides)`.
"""

from ssma_tf.optim.optimizers import OVERRIDES, GroupOptimizer, split_variables
from ssma_tf.optim.schedules import WarmupConstant, WarmupPoly, make_schedule

__all__ = ["OVERRIDES", "GroupOptimizer", "WarmupConstant", "WarmupPoly", "make_schedule",
           "split_variables"]
