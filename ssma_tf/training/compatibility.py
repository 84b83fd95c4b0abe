"""Does a checkpoint fit the config? Checked before TensorFlow restores it, so that a
mismatch is one line naming each differing key with the config's and the checkpoint's
value (e.g. `num_classes: config 5, checkpoint 7`) instead of a restore traceback.

The checkpoint's run_info.json says what it was trained with (model, num_classes,
modalities and the model's own keys); a checkpoint without one (an SSMA-format run) is
judged by its variables' shapes against the model built from the config. Modalities match
by name: a config listing the checkpoint's modalities in another order gets them in the
checkpoint's order (models keep one stream per position).
"""

import json
import os

import tensorflow as tf

from ssma_tf.errors import ConfigError
from ssma_tf.training.run_info import read_run_info
from ssma_tf.weights.assign import variables_by_path

ALWAYS = ("model", "num_classes")


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _difference(key, mine, theirs):
    return f"{key}: config {mine!r}, checkpoint {theirs!r}"


def _saved_config(prefix):
    info = read_run_info(_folder(prefix))
    return (info or {}).get("config")


def _folder(prefix):
    return os.path.dirname(os.path.abspath(prefix))


def aligned(config, prefix, extra_keys=()):
    """`config` checked against checkpoint `prefix`'s run_info.json (model, num_classes,
    the modality names and `extra_keys`, e.g. framework for a resume): ConfigError listing
    each difference; returns the config with the checkpoint's modality order."""
    saved = _saved_config(prefix)
    if not saved:
        return config
    problems = []
    for key in (*ALWAYS, *extra_keys):
        if key in saved and _plain(getattr(config, key, None)) != _plain(saved[key]):
            problems.append(_difference(key, getattr(config, key, None), saved[key]))
    theirs = list(saved.get("modalities") or [])
    mine = list(config.modalities)
    if theirs and sorted(mine) != sorted(theirs):
        problems.append(_difference("modalities", mine, theirs))
    if problems:
        raise ConfigError(f"{config.source}: checkpoint {prefix} was trained with other "
                          f"settings: {'; '.join(problems)}")
    if theirs and mine != theirs:
        return config.replace(modalities=theirs)
    return config


def _checkpoint_key(item, path):
    escaped = path.replace(".", "..").replace("/", ".S")
    return f"{item}_variables/by_path/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def _model_key_differences(config, saved):
    """Differences in model and num_classes, then (same model) in the model's own keys."""
    from ssma_tf.config import chosen_components

    def differ(keys):
        return [_difference(k, getattr(config, k), saved[k]) for k in keys
                if k in saved and k in config and _plain(getattr(config, k)) != _plain(saved[k])]

    if differ(["model"]):
        return differ(ALWAYS)
    entries, _ = chosen_components(config.to_dict(), lambda key: config.source)
    return differ(["num_classes", *sorted({k for e in entries if e.kind != "framework"
                                           for k in e.keys})])


def _shape_differences(model, prefix, item):
    """([(path, model shape, checkpoint shape)], [paths missing from the checkpoint])."""
    stored = dict(tf.train.list_variables(prefix))
    differ, missing = [], []
    for path, weight in variables_by_path(model).items():
        shape = stored.get(_checkpoint_key(item, path))
        if shape is None:
            missing.append(path)
        elif list(shape) != list(weight.shape):
            differ.append((path, list(weight.shape), list(shape)))
    return differ, missing


def _class_axis_only(differ, num_classes):
    """The checkpoint's class count when every differing axis of every differing weight is
    num_classes in the model and one same other count in the checkpoint; else None."""
    theirs = {c for _, mine, saved in differ if len(mine) == len(saved)
              for m, c in zip(mine, saved) if m != c and m == num_classes}
    axes = [(m, c) for _, mine, saved in differ for m, c in zip(mine, saved) if m != c]
    ranks_match = all(len(mine) == len(saved) for _, mine, saved in differ)
    if differ and ranks_match and len(theirs) == 1 and all(m == num_classes for m, _ in axes):
        return theirs.pop()
    return None


def check_shapes(model, prefix, item, config):
    """ConfigError when checkpoint `prefix`'s `item` model does not fit `model` (built from
    `config`): the differing config keys from run_info.json, else what the shapes say
    (num_classes when only the class axis differs)."""
    differ, missing = _shape_differences(model, prefix, item)
    if not differ and not missing:
        return
    saved = _saved_config(prefix)
    problems = _model_key_differences(config, saved) if saved else []
    classes = _class_axis_only(differ, config.num_classes)
    if not problems and classes is not None and not missing:
        problems = [_difference("num_classes", config.num_classes, classes)]
    if not problems:
        if differ:
            path, mine, theirs = differ[0]
            problems.append(f"{len(differ)} weights differ in shape, e.g. {path}: config "
                            f"{mine}, checkpoint {theirs}")
        if missing:
            problems.append(f"{len(missing)} weights are not in the checkpoint, e.g. "
                            f"{missing[0]}")
    raise ConfigError(f"{config.source}: checkpoint {prefix} does not fit the {config.model} "
                      f"this config builds: {'; '.join(problems)}")
