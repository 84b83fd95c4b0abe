"""Training regimes. Each module registers its framework with the keys it reads
(`register_framework`, ssma_tf/registry.py); importing the package imports every module."""

import importlib
import pkgutil

from ssma_tf.registry import FRAMEWORKS


def get_framework(name):
    """The Framework class registered as `name` (ConfigError naming the known ones)."""
    return FRAMEWORKS.get(name, "key 'framework'").obj


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
