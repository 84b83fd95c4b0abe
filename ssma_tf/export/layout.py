"""The exported model folder: `output_dir/<version>/` (TF Serving's `<model>/<version>/`),
the model file(s) and the side files config.yaml, export_info.json and run_info.json."""

import json
import os

import yaml

from ssma_tf.errors import InputError


def next_version(output_dir):
    """1 + the highest integer sub-folder of `output_dir` (1 if none)."""
    if not os.path.isdir(output_dir):
        return 1
    versions = [int(n) for n in os.listdir(output_dir)
                if n.isdigit() and os.path.isdir(os.path.join(output_dir, n))]
    return max(versions, default=0) + 1


def version_folder(output_dir, version=None, overwrite=False):
    """`output_dir/<version>` (default the next version); InputError if it exists, unless
    `overwrite`."""
    version = next_version(output_dir) if version is None else int(version)
    if version < 1:
        raise InputError(f"--version must be a positive integer, got {version}")
    folder = os.path.join(output_dir, str(version))
    if os.path.exists(folder) and not overwrite:
        raise InputError(f"{folder} already holds version {version}; pass --overwrite to "
                         "replace it, or choose another --version")
    return folder


def write_side_files(folder, info, config_dict=None, run_info=None):
    """config.yaml (the resolved config), export_info.json (`info`) and, when known, the
    training run's run_info.json."""
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config_dict or {}, handle, sort_keys=False)
    with open(os.path.join(folder, "export_info.json"), "w") as handle:
        json.dump(info, handle, indent=1)
    if run_info:
        with open(os.path.join(folder, "run_info.json"), "w") as handle:
            json.dump(run_info, handle, indent=1, default=str)
