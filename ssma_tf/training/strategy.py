"""tf.distribute strategy from the config, and who may write (the chief)."""

import json
import os

import tensorflow as tf


def make_strategy(name):
    """one_device (first GPU, else CPU), mirrored (all GPUs, else all logical CPUs) or
    multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG)."""
    if name == "multi_worker":       # first: it must configure the runtime itself
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy):
    """True unless this is a non-chief worker of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def worker_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return 0 if resolver is None or resolver.task_id is None else int(resolver.task_id)
