"""MirroredStrategy over the 2 logical CPUs matches one device; 2-process multi-worker run."""

import json
import os
import re
import socket
import subprocess
import sys
from typing import ClassVar

import pytest
import tensorflow as tf

from ssma_tf.config import config_from_dict
from ssma_tf.frameworks.base import Framework
from ssma_tf.frameworks.cps import CPS
from ssma_tf.training.trainer import make_step_fn, train
from ssma_tf.training.validation import read_best
from trainer_data import tiny_config, write_config_file, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(text):
    return [float(v) for v in re.findall(r"step \d+/\d+  loss ([0-9.e+-]+)", text)]


def test_mirrored_matches_one_device_with_sync_bn(tmp_path, capsys):
    records = write_records(tmp_path)
    common = dict(max_iteration=3, skip_step=1, summary_step=0, dropout=0.0, sync_bn=True)
    train(tiny_config(tmp_path / "one", records, **common))
    one = _losses(capsys.readouterr().out)
    two_dir = train(tiny_config(tmp_path / "two", records, strategy="mirrored",
                                val_data=records, eval_step=3, **common))
    two = _losses(capsys.readouterr().out)
    assert len(one) == len(two) == 3
    assert one == pytest.approx(two, rel=2e-3)
    assert tf.train.latest_checkpoint(os.path.join(two_dir, "best")).endswith("ckpt-3")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_multi_worker(tmp_path):
    records = write_records(tmp_path)
    config = tmp_path / "mw.config"
    ckpt = tmp_path / "ckpt"
    write_config_file(config, records, ckpt, batch_size=4, max_iteration=4, save_step=2,
                      skip_step=2, summary_step=0, strategy="multi_worker", flip=False,
                      photometric=False, scale_min=1.0, scale_max=1.0,
                      val_data=str(records), eval_step=2)   # the chief scores, both save
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": index}}),
                   PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "-c",
                                       str(config)], env=env, cwd=str(tmp_path),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[-1][-3000:]
    assert "step 4/4" in outputs[0] and "step 4/4" not in outputs[1]     # chief logs
    assert tf.train.latest_checkpoint(str(ckpt)).endswith("ckpt-4")
    assert os.path.isfile(ckpt / "run_info.json")
    assert not [n for n in os.listdir(ckpt) if n.startswith(".worker")]
    assert "val_miou" in outputs[0]
    best = read_best(str(ckpt / "best"))
    assert tf.train.latest_checkpoint(str(ckpt / "best")).endswith(f"ckpt-{best['step']}")


class _Logs(Framework):
    """Logs replica-dependent values: replica r gives d_loss 1 + r, d_acc 0.25 + 0.5 r..."""

    log_reductions: ClassVar[dict] = {"pixels": "sum", "d_loss_weight": "mean"}

    def build(self):
        pass

    def train_step(self, labeled, unlabeled=None):
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                          tf.float32)
        return {"d_loss": 1.0 + replica, "d_acc": 0.25 + 0.5 * replica,
                "pixels": 10.0 + replica, "d_loss_weight": 2.0 + 2.0 * replica}


def test_logged_values_are_reduced_as_the_framework_declares():
    """Under 2 replicas: names ending in loss are summed, the rest averaged (a discriminator
    accuracy; the old rule summed every name containing "loss"), unless `log_reductions`
    says otherwise."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = config_from_dict({"num_classes": 2, "batch_size": 2})
    framework = _Logs(config, None)
    with strategy.scope():
        framework.step = tf.Variable(0, dtype=tf.int64,
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    data = tf.data.Dataset.from_tensors(({"rgb": tf.zeros([4, 4, 3])}, tf.zeros([4, 4])))
    labeled = iter(strategy.experimental_distribute_dataset(data.repeat().batch(2)))
    values = {k: float(v) for k, v in make_step_fn(config, strategy, framework)(
        labeled, None).items()}
    assert values == {"d_loss": 3.0, "d_acc": 0.5, "pixels": 21.0, "d_loss_weight": 3.0}
    assert int(framework.step.numpy()) == 1
    assert CPS(config, None).log_reduction("supervised_loss2") == tf.distribute.ReduceOp.SUM
