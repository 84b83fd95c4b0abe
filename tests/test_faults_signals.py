"""Real signals to real processes (issue 18): SIGTERM and SIGINT to training save a
checkpoint at the current step and the re-run continues there; a second run on the same
folder is refused while the first runs; Ctrl-C and SIGTERM to the converter with its
worker pool end it promptly and leave nothing behind."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.io_utils import LOCK_NAME
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_config_file, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
STEP_LINE = re.compile(r"^step (\d+)/\d+\s+loss ([\d.e+-]+)")


def _digest(prefix):
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in sorted(tf.io.gfile.glob(prefix + ".*"))}


def _steps_until(proc, last_step, seen):
    """Read the run's progress lines into `seen` ({step: loss}) until `last_step`."""
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        match = STEP_LINE.match(line)
        if match:
            seen[int(match.group(1))] = float(match.group(2))
            if int(match.group(1)) >= last_step:
                return
        assert time.monotonic() < deadline, "training too slow"
    raise AssertionError(f"training ended before step {last_step}: rc {proc.wait()}")


def _stop(proc, number, seen):
    proc.send_signal(number)
    out, err = proc.communicate(timeout=120)
    for line in out.splitlines():
        match = STEP_LINE.match(line)
        if match:
            seen[int(match.group(1))] = float(match.group(2))
    return err


@pytest.mark.slow
def test_sigterm_and_sigint_save_at_the_current_step_and_the_rerun_continues(tmp_path):
    records = write_records(tmp_path)
    ckpt = tmp_path / "ckpt"
    config = write_config_file(tmp_path / "r.config", records, ckpt, batch_size=2,
                               max_iteration=400, save_step=1000, skip_step=1, summary_step=0,
                               learning_rate=0.005)
    command = [sys.executable, os.path.join(ROOT, "train.py"), "-c", str(config)]
    first = {}
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _steps_until(proc, 3, first)
        # a second run on the same folder, while the first trains: refused, naming it
        lock = json.load(open(ckpt / LOCK_NAME))
        assert lock["pid"] == proc.pid
        with pytest.raises(InputError, match=f"^{ckpt} is in use by another training run "
                           f"\\(pid {proc.pid} on "):
            train(tiny_config(tmp_path, records, max_iteration=400))
        err = _stop(proc, signal.SIGTERM, first)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 75, err[-2000:]
    stopped = max(first)
    assert stopped >= 3
    assert f"stopped by SIGTERM after step {stopped}; checkpoint saved to {ckpt}/ckpt-{stopped};"\
        f" run the same command again to resume at step {stopped + 1}" in err
    assert "Traceback" not in err
    assert tf.train.latest_checkpoint(str(ckpt)).endswith(f"ckpt-{stopped}")
    assert not (ckpt / LOCK_NAME).exists()
    assert not [n for n in os.listdir(ckpt) if n.endswith("_temp") or ".tmp-" in n]
    saved = _digest(str(ckpt / f"ckpt-{stopped}"))

    second = {}
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _steps_until(proc, stopped + 3, second)
        err = _stop(proc, signal.SIGINT, second)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 75, err[-2000:]
    assert min(second) == stopped + 1                     # continues, no step lost or redone
    again = max(second)
    assert f"stopped by SIGINT after step {again}; checkpoint saved to {ckpt}/ckpt-{again}" in err
    assert "KeyboardInterrupt" not in err and "Traceback" not in err
    assert json.load(open(ckpt / "run_info.json"))["start_step"] == stopped
    # the loss curve continues where it was (not from the untrained loss) and stays finite
    assert second[stopped + 1] < first[1]
    assert abs(second[stopped + 1] - first[stopped]) < 0.5 * first[1]
    assert _digest(str(ckpt / f"ckpt-{stopped}")) == saved     # the earlier save is intact


def _long_list(tmp_path, count):
    rng = np.random.default_rng(0)
    rgb, depth, label = (str(tmp_path / n) for n in ("rgb.png", "depth.png", "label.png"))
    cv2.imwrite(rgb, rng.integers(0, 255, (256, 256, 3)).astype(np.uint8))
    cv2.imwrite(depth, rng.integers(0, 9000, (256, 256)).astype(np.uint16))
    cv2.imwrite(label, rng.integers(0, 3, (256, 256)).astype(np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{rgb} {depth} {label}\n" * count)
    return listing


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_converter_stops_on_a_signal_and_leaves_nothing(tmp_path, number):
    listing = _long_list(tmp_path, 3000)
    before = hashlib.sha256(listing.read_bytes()).hexdigest()
    out = tmp_path / "out"
    command = [sys.executable, os.path.join(ROOT, "convert_to_tfrecords.py"), "-f",
               str(listing), "-r", str(out / "train.tfrecords"), "--workers", "2",
               "--num-shards", "2"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        for line in proc.stderr:                     # absl logs each 10% to stderr
            if "converted" in line:
                break
        assert proc.poll() is None, "conversion ended before the signal"
        started = time.monotonic()
        # Ctrl-C in a terminal signals the whole process group (the workers too)
        os.killpg(proc.pid, number)
        err = proc.stderr.read()
        proc.wait(timeout=60)
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert os.listdir(out) == []                      # no shard, sidecar or temp left
    assert hashlib.sha256(listing.read_bytes()).hexdigest() == before
