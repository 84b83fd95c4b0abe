"""ssma_tf.models: pure Keras 3 models. Importing the package imports every module in it, so
each model and backbone registered beside its code is in the registry."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
