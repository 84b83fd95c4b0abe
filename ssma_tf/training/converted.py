"""A checkpoint folder made from imported weights (`python -m ssma_tf.weights convert`): what
`init_checkpoint` and the `checkpoint` of evaluate / export / predict accept like a trained run.

The folder holds a tf.train.Checkpoint with the model as "model" (what init_checkpoint restores)
and, when the config's framework evaluates another item (mean teacher: "teacher"), a copy as
that item too, plus run_info.json with the config and the modality specs; written atomically.
"""

import tensorflow as tf

from ssma_tf.data.schema import ModalitySpec
from ssma_tf.frameworks import get_framework
from ssma_tf.io_utils import atomic_dir
from ssma_tf.models import factory
from ssma_tf.training.checkpoints import config_specs, float32_policy, import_foreign, trackable
from ssma_tf.training.run_info import write_run_info


def default_specs(modalities):
    """Specs without records: raw 1-channel depth, the first other modality a colour image,
    the rest 3-channel 8-bit images (as the toolkit's default channels)."""
    specs = {}
    for index, name in enumerate(modalities):
        if name == "depth":
            specs[name] = ModalitySpec(name, "raw", 1, "uint16")
        else:
            specs[name] = ModalitySpec(name, "color" if index == 0 else "image", 3, "uint8")
    return specs


class VariableCopies(tf.Module):
    """Copies of a ModelVariables' variables, under the same paths."""

    def __init__(self, model_variables):
        super().__init__()
        self.by_path = {path: tf.Variable(v.numpy(), name=v.name.split(":")[0])
                        for path, v in model_variables.by_path.items()}


def write_checkpoint_folder(folder, model, config, specs, extra=None):
    """Write `model` (built from `config` for modalities `specs`) as a checkpoint folder;
    returns the checkpoint prefix inside it."""
    items = trackable({"model": model})
    item = get_framework(config.framework).eval_item
    if item != "model":   # a second copy: one checkpoint object per item, as training saves
        items[f"{item}_variables"] = VariableCopies(items["model_variables"])
    with atomic_dir(folder) as tmp:
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**items), tmp, 1)
        manager.save(checkpoint_number=0)
        write_run_info(tmp, config, {name: spec.to_json() for name, spec in specs.items()},
                       extra)
    return tf.train.latest_checkpoint(folder)


def convert(path, config, folder, *, new_head=False, options=None):
    """Import the weight file `path` into the model `config` builds and write it to `folder`
    (write_checkpoint_folder); returns (importer name, Report). The modality specs come from
    the config's train_data, else default_specs."""
    specs = config_specs(config) or default_specs(config.modalities)
    with float32_policy():
        model = factory.build_model(config, {n: s.channels for n, s in specs.items()})
    name, report = import_foreign(model, path, config, new_head=new_head, verbose=False,
                                  options={**(options or {}), "specs": specs})
    write_checkpoint_folder(folder, model, config, specs, {
        "converted_from": path, "importer": name,
        "import_report": {"matched": len(report.matched), "unused": report.unused,
                          "lacking": report.lacking, "new_head": report.new_head,
                          "notes": report.notes}})
    return name, report
