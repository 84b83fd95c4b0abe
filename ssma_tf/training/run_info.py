"""run_info.json beside the checkpoints: resolved config, versions, git SHA, modality specs."""

import json
import os
import platform
import subprocess
import sys

from ssma_tf.io_utils import atomic_write, read_json

RUN_INFO = "run_info.json"


def git_sha():
    """The repository HEAD commit of this package, or None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions():
    import keras
    import numpy
    import tensorflow

    import ssma_tf
    return {"python": platform.python_version(), "tensorflow": tensorflow.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__,
            "ssma_tf": ssma_tf.__version__}


def write_run_info(folder, config, modality_specs=None, extra=None):
    """Write folder/run_info.json atomically; returns its path."""
    info = {"config": config.to_dict(), "config_file": config.source,
            "command": " ".join(sys.argv), "versions": package_versions(), "git_sha": git_sha(),
            "modalities": modality_specs or {}, **(extra or {})}
    path = os.path.join(folder, RUN_INFO)
    with atomic_write(path) as handle:
        json.dump(info, handle, indent=2, sort_keys=True, default=str)
    return path


def read_run_info(folder):
    """The run_info dict in `folder`, or None."""
    return read_json(os.path.join(folder, RUN_INFO))
