"""Auto-resume: SIGKILL a training process after its first checkpoint, re-run, finish."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from trainer_data import write_config_file, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_last_checkpoint(tmp_path):
    records = write_records(tmp_path)
    ckpt = tmp_path / "ckpt"
    config = tmp_path / "r.config"
    write_config_file(config, records, ckpt, batch_size=2, max_iteration=400, save_step=3,
                      skip_step=1, summary_step=0, keep_checkpoints=100)
    command = [sys.executable, os.path.join(ROOT, "train.py"), "-c", str(config)]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not tf.train.latest_checkpoint(str(ckpt)) and time.monotonic() < deadline:
            assert proc.poll() is None, "training ended before its first checkpoint"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    killed_at = int(tf.train.latest_checkpoint(str(ckpt)).rsplit("-", 1)[1])
    assert 3 <= killed_at < 400
    done = subprocess.run(command + ["--override", "max_iteration=12"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [int(s) for s in re.findall(r"^step (\d+)/12", done.stdout, re.M)]
    assert steps[0] == killed_at + 1 and steps[-1] == 12
    info = json.load(open(ckpt / "run_info.json"))
    assert info["start_step"] == killed_at and info["resumed_from"].endswith(f"ckpt-{killed_at}")
    assert tf.train.latest_checkpoint(str(ckpt)).endswith("ckpt-12")
    again = subprocess.run(command + ["--override", "max_iteration=12"], env=env,
                           capture_output=True, text=True, timeout=400)
    assert again.returncode == 0 and "step " not in again.stdout      # already finished


def test_train_cli_reports_config_errors(tmp_path):
    config = tmp_path / "bad.config"
    config.write_text("model: AdapNet_pp\nbach_size: 2\n")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "-c", str(config)],
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert re.search(r"error: .*bad\.config:2: unknown key 'bach_size' \(did you mean "
                     r"'batch_size'\?\)", done.stderr)


def test_train_cli_names_a_checkpoint_folder_it_cannot_create(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run's parent folder should be")
    records = write_records(tmp_path)
    config = write_config_file(tmp_path / "run.config", records, blocker / "run")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "-c", str(config)],
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: cannot create the folder {blocker / 'run'}: Not a directory" in done.stderr
