"""Throughput of LinearFusion MiT-b0 (rgb + depth) on this machine's CPU.

Measures, at --size x --size with --batch images:
  - TF training step (forward + CE on the 3 outputs + AdamW), XLA on and off;
  - TF inference (forward), XLA on and off;
  - inference under KERAS_BACKEND=jax (jax.jit), in a subprocess.
and compares with the M3L PyTorch reference on the same 2-core CPU. Every call is timed
after two warm-up calls (compilation); img/s = batch / median call time, so a short load
spike from another process does not decide the result. The machine's 1-minute load
average is printed before and after: on a shared machine, trust only runs where it stays
below the core count.

    python bench/linear_fusion.py [--size 384] [--batch 2] [--steps 5] [--only tf_train_no_xla,...]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = {"train": 1.1, "inference": 4.3}  # img/s, M3L PyTorch, same 2-core CPU
TARGET = {"train": 1.5, "inference": 2.0}  # ratio over the reference
NUM_CLASSES = 13


def _inputs(batch, size):
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = {
        "rgb": rng.normal(size=(batch, size, size, 3)).astype("float32"),
        "depth": rng.uniform(size=(batch, size, size, 1)).astype("float32"),
    }
    labels = rng.integers(0, NUM_CLASSES, size=(batch, size, size)).astype("int32")
    return inputs, labels


def _images_per_second(fn, batch, steps):
    from timing import median_seconds  # bench/timing.py (this script's folder is on the path)

    return batch / median_seconds(fn, steps)


def _load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def bench_tf(batch, size, steps, only):
    """{name: img/s} for TF train/inference with XLA off and on (the names in `only`)."""
    import keras
    import tensorflow as tf

    from ssma_tf.models.linear_fusion import build_linear_fusion

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    inputs, labels = _inputs(batch, size)
    inputs = {k: tf.constant(v) for k, v in inputs.items()}
    labels = tf.constant(labels)

    def functions(xla):
        """(train step, forward) of a fresh model built for XLA or not, compiled likewise."""
        keras.utils.set_random_seed(0)
        model = build_linear_fusion(NUM_CLASSES, {"rgb": 3, "depth": 1}, variant="b0",
                                    xla_friendly=xla)
        optimizer = keras.optimizers.AdamW(1e-4, weight_decay=1e-4)
        optimizer.build(model.trainable_variables)
        weights = model.output_loss_weights

        def train_step():
            with tf.GradientTape() as tape:
                outputs = model(inputs, training=True)
                loss = tf.add_n([w * loss_fn(labels, outputs[k]) for k, w in weights.items()])
            variables = model.trainable_variables
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        def infer():
            return model(inputs, training=False)["logits"]

        return (tf.function(train_step, jit_compile=xla), tf.function(infer, jit_compile=xla))

    results = {}
    for xla in (False, True):
        tag = "xla" if xla else "no_xla"
        train, forward = functions(xla)
        if f"tf_train_{tag}" in only:
            results[f"tf_train_{tag}"] = _images_per_second(lambda: float(train()), batch, steps)
        if f"tf_inference_{tag}" in only:
            results[f"tf_inference_{tag}"] = _images_per_second(
                lambda: forward().numpy(), batch, steps)
    return results


def bench_jax_forward(batch, size, steps):
    """img/s of the jitted forward under the jax backend (call in a jax-backend process)."""
    import jax
    import keras

    from ssma_tf.models.linear_fusion import build_linear_fusion

    keras.utils.set_random_seed(0)
    model = build_linear_fusion(NUM_CLASSES, {"rgb": 3, "depth": 1}, variant="b0")
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    inputs, _ = _inputs(batch, size)
    forward = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0]["logits"])
    return {"jax_inference": _images_per_second(
        lambda: forward(trainable, non_trainable, inputs).block_until_ready(), batch, steps)}


ROWS = ("tf_train_no_xla", "tf_train_xla", "tf_inference_no_xla", "tf_inference_xla",
        "jax_inference")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows to run")
    parser.add_argument("--jax-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)

    if args.jax_child:
        print(json.dumps(bench_jax_forward(args.batch, args.size, args.steps)))
        return
    only = [r for r in args.only.split(",") if r]
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        parser.error(f"--only: unknown rows {unknown}; choose from {list(ROWS)}")
    load_before = _load()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = bench_tf(args.batch, args.size, args.steps, only)
    if "jax_inference" in only:
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--jax-child", "--size", str(args.size),
             "--batch", str(args.batch), "--steps", str(args.steps)],
            env=env, capture_output=True, text=True, check=True)
        results.update(json.loads(child.stdout.strip().splitlines()[-1]))

    print(f"LinearFusion MiT-b0, rgb+depth, {args.size}x{args.size}, batch {args.batch}, "
          f"median of {args.steps} timed calls, {os.cpu_count()} CPUs, "
          f"1-min load {load_before:.2f} before / {_load():.2f} after")
    print(f"  {'pytorch_train (M3L)':22s} {REFERENCE['train']:7.2f} img/s   reference")
    print(f"  {'pytorch_inference (M3L)':22s} {REFERENCE['inference']:7.2f} img/s   reference")
    failed = []
    for name in ROWS:
        if name not in results:
            continue
        value = results[name]
        kind = "train" if "train" in name else "inference"
        ratio = value / REFERENCE[kind]
        # the binding target is on the CPU default (TF, XLA off); other rows are informative
        binding = name in ("tf_train_no_xla", "tf_inference_no_xla")
        verdict = ("PASS" if ratio >= TARGET[kind] else "FAIL") if binding else "info"
        if verdict == "FAIL":
            failed.append(name)
        print(f"  {name:22s} {value:7.2f} img/s   x{ratio:4.2f} vs PyTorch "
              f"{REFERENCE[kind]} img/s, target x{TARGET[kind]}: {verdict}")
    print("RESULT:", "FAIL (" + ", ".join(failed) + ")" if failed else "PASS")


if __name__ == "__main__":
    main()
