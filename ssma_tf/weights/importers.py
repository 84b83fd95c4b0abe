"""Importers: one per source layout, registered beside its mapping code.

    register_importer(name, map_fn, formats=(...), models=(...), fits=fn, doc="...")

`fits(source) -> bool` recognises the layout from the tensor names (never from the file
name); `map_fn(source, model, config, options) -> assign.Mapping` maps it onto a built
model of one of `models` (config.model names). `options` holds the command's choices (e.g.
`branch`: "student" or "teacher" for mean-teacher snapshots).
"""

import importlib
import pkgutil

from ssma_tf.errors import InputError
from ssma_tf.registry import Registry
from ssma_tf.weights.assign import apply_mapping

IMPORTERS = Registry("importer")


def register_importer(name, map_fn, *, formats, models, fits, doc):
    return IMPORTERS.register(name, map_fn, formats=tuple(formats), models=tuple(models),
                              fits=fits, doc=doc)


def load_all():
    """Import every module of ssma_tf.weights so that each importer is registered."""
    package = importlib.import_module("ssma_tf.weights")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name == "__main__":       # the command line, not an importer
            continue
        importlib.import_module(f"ssma_tf.weights.{module.name}")


def fitting(source):
    """The importer entries whose format and `fits` accept `source`."""
    load_all()
    return [entry for entry in IMPORTERS
            if source.format in entry.formats and entry.fits(source)]


def importer_for(source, model_name, where="weights"):
    """The one importer that maps `source` onto model `model_name`; InputError naming what
    the source fits otherwise."""
    entries = fitting(source)
    chosen = [e for e in entries if model_name.lower() in (m.lower() for m in e.models)]
    if len(chosen) == 1:
        return chosen[0]
    if not entries:
        raise InputError(f"{where}: {source.path} ({source.format}) matches no known layout "
                         f"of pretrained weights")
    fits = ", ".join(f"{e.name} -> {'/'.join(e.models)}" for e in entries)
    if not chosen:
        raise InputError(f"{where}: {source.path} is {fits}; it does not fit model "
                         f"{model_name}")
    raise InputError(f"{where}: {source.path} fits several importers for {model_name}: {fits}")


def import_weights(model, source, config, options=None, *, new_head=False, where="weights"):
    """Map `source` (a readers.Source) onto `model`, built from `config`, with the one importer
    that fits, and assign it; returns (the importer's name, assign.Report)."""
    entry = importer_for(source, config.model, where)
    mapping = entry.obj(source, model, config, dict(options or {}))
    report = apply_mapping(model, mapping, source.tensors, new_head=new_head, where=where)
    return entry.name, report
