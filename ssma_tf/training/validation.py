"""Validation inside the training loop (`eval_step`) and the best checkpoint.

Every `eval_step` steps and at the end, the framework's eval model (its `eval_output`) is
scored on `val_data` by the evaluator evaluate.py uses (`evaluation.evaluator.evaluate`:
full-size images padded to a multiple of 32, `eval_scales`, `eval_flip`, `ignore_label`).
Only the chief evaluates; under a multi-worker strategy its score is shared with the other
workers (`share_from_chief`), so that all of them take part in the (collective) save.

The checkpoint with the highest `best_metric` is kept in `<checkpoint>/best/` (a
CheckpointManager with max_to_keep 1, so a complete training checkpoint that evaluate,
export and `init_checkpoint` accept as `<checkpoint>/best`), beside a copy of run_info.json
and `best.json` {step, miou, metric, value}, written atomically after the checkpoint. A
resumed run reads best.json, so it replaces the best only by a better score.
"""

import json
import math
import os
import time

import tensorflow as tf

from ssma_tf.data.pipeline import eval_dataset
from ssma_tf.evaluation.evaluator import evaluate, select_output
from ssma_tf.evaluation.inference import Inference
from ssma_tf.io_utils import atomic_write, read_json
from ssma_tf.training import saving
from ssma_tf.training.run_info import RUN_INFO

BEST_FOLDER = "best"
BEST_JSON = "best.json"
SCORES = ("miou", "pixel_accuracy", "mean_class_accuracy")   # the logged scores


def score(model, dataset, config):
    """evaluate()'s result dict for `model` on `dataset` with the config's settings."""
    return evaluate(model, dataset, num_classes=config.num_classes,
                    ignore_label=config.ignore_label, inference=Inference.from_config(config))


def read_best(folder):
    """The best.json dict in `folder`, or None."""
    return read_json(os.path.join(folder, BEST_JSON))


def write_best(folder, info):
    """Write folder/best.json atomically (temp file, then os.replace)."""
    with atomic_write(os.path.join(folder, BEST_JSON)) as handle:
        json.dump(info, handle, indent=2, sort_keys=True)


def share_from_chief(strategy, value, chief):
    """`value` as the chief has it, on every worker of a multi-worker strategy (one
    all-reduce: the chief's replicas give (value, 1), the others' (0, 0)); `value` itself
    under single-worker strategies, where this process is the chief."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    mine = tf.constant([value if chief else 0.0, 1.0 if chief else 0.0], tf.float32)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(tf.function(lambda: tf.identity(mine))), axis=None)
    return float(total[0] / total[1])


def _number(value):
    """A score as a float; None (nothing scored) or NaN rank below everything."""
    return -math.inf if value is None or math.isnan(value) else float(value)


class Validator:
    """Scores the eval model on `config.val_data` and keeps the best checkpoint.

    `checkpoint` is the training tf.train.Checkpoint, `write_dir` where this worker saves
    (the run folder on the chief), `run_dir` the run folder; `resumed`: read the stored best.
    """

    def __init__(self, config, strategy, framework, checkpoint, write_dir, run_dir, chief,
                 resumed):
        self.config = config
        self.strategy = strategy
        self.chief = chief
        self.run_dir = run_dir
        self.dataset = eval_dataset(config.val_data, modalities=config.modalities,
                                    batch_size=1, ignore_label=config.ignore_label,
                                    depth_max=config.depth_max,
                                    skip_corrupt=config.skip_corrupt_records) if chief else None
        self.model = select_output(framework.eval_model, config) if chief else None
        self.folder = os.path.join(write_dir, BEST_FOLDER)
        self.manager = tf.train.CheckpointManager(checkpoint, self.folder, max_to_keep=1)
        self.items = framework.checkpoint_items()
        if chief:
            saving.remove_partial_saves(self.folder)
        stored = read_best(os.path.join(run_dir, BEST_FOLDER)) if resumed else None
        self.best = _number(stored.get("value", stored.get("miou"))) if stored else -math.inf
        self.best_step = stored.get("step") if stored else None

    def __call__(self, step):
        """Score, save when better; returns ({name: float} to log, seconds taken)."""
        start = time.monotonic()
        metric = self.config.best_metric
        result = score(self.model, self.dataset, self.config) if self.chief else {}
        value = share_from_chief(self.strategy, _number(result.get(metric)), self.chief)
        if value > self.best:
            self.best, self.best_step = value, step
            saving.save(self.manager, step, self.items)
            if self.chief:
                self._write_info(step, result, value)
        logged = {f"val_{k}": result[k] for k in SCORES if result.get(k) is not None}
        return logged, time.monotonic() - start

    def _write_info(self, step, result, value):
        source = os.path.join(self.run_dir, RUN_INFO)
        if os.path.isfile(source):
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
            with atomic_write(os.path.join(self.folder, RUN_INFO)) as handle:
                handle.write(text)
        write_best(self.folder, {"step": int(step), "miou": result.get("miou"),
                                 "metric": self.config.best_metric, "value": value})
