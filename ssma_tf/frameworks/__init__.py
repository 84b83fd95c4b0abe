"""Training regimes, by config name: FRAMEWORKS[config.framework](config, model_builder).

Add a regime by importing its class here and adding one entry.
"""

from ssma_tf.frameworks.supervised import Supervised

FRAMEWORKS = {"supervised": Supervised}


def get_framework(name):
    """The Framework class registered as `name`."""
    if name not in FRAMEWORKS:
        raise KeyError(f"unknown framework {name!r}; known: {sorted(FRAMEWORKS)}")
    return FRAMEWORKS[name]
