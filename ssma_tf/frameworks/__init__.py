"""Training regimes, by config name: FRAMEWORKS[config.framework](config, model_builder).

Add a regime by importing its class here and adding one entry.
"""

from ssma_tf.frameworks.cps import CPS
from ssma_tf.frameworks.m3l import M3L, MeanTeacherModDrop
from ssma_tf.frameworks.mean_teacher import MeanTeacher
from ssma_tf.frameworks.modality_dropout import SupervisedModDrop
from ssma_tf.frameworks.supervised import Supervised

FRAMEWORKS = {"supervised": Supervised}
# semi-supervised engine (ssl engineer)
FRAMEWORKS.update({
    "supervised_moddrop": SupervisedModDrop,
    "mean_teacher": MeanTeacher,
    "mean_teacher_moddrop": MeanTeacherModDrop,
    "cps": CPS,
    "m3l": M3L,
})


def get_framework(name):
    """The Framework class registered as `name`."""
    if name not in FRAMEWORKS:
        raise KeyError(f"unknown framework {name!r}; known: {sorted(FRAMEWORKS)}")
    return FRAMEWORKS[name]
