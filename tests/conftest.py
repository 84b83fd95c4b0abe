"""Shared test setup: quiet TensorFlow, two logical CPU devices, fixed seeds."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402


def pytest_configure(config):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    """Give the MirroredStrategy objects of each test their own collective keys. TF caches a
    collective by its (group, instance) keys for the whole process, and every new strategy
    starts counting at the same ones, so two tests with synchronised BN under 2 replicas
    (test_distributed.py, test_frameworks_ssl.py) otherwise fail in one process with "Shape
    mismatch in the collective instance". `_collective_key_base` is TF's hook for tests."""
    import tensorflow as tf

    tf.distribute.MirroredStrategy._collective_key_base += 100_000
    yield
