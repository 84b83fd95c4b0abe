"""Throughput of AdapNet++ / SSMA on the current device.

Per model: parameter count, forward FLOPs, TF training-step img/s (tf.function, Adam,
cross-entropy on every supervised output with its loss weight), TF inference img/s, and
the forward img/s under KERAS_BACKEND=jax (jax.jit, in a subprocess).

FLOPs are counted by TensorFlow's profiler (float_operation) on the concrete forward
function at the given static size; one multiply-add counts as 2 FLOPs.

    python bench/train_step.py --height 384 --width 768 --batch 1 --steps 3
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODALITIES = {"adapnet_pp": {"rgb": 3}, "ssma": {"rgb": 3, "depth": 3}}


def build(name, args):
    """The model `name` at the benchmark's width multiplier and class count."""
    if name == "adapnet_pp":
        from ssma_tf.models.adapnet_pp import build_adapnet_pp
        return build_adapnet_pp(args.num_classes, width=args.width_mult)
    from ssma_tf.models.ssma import build_ssma
    return build_ssma(args.num_classes, MODALITIES[name], width=args.width_mult)


def random_inputs(name, args, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = (args.batch, args.height, args.width)
    return {m: rng.normal(size=shape + (c,)).astype("float32")
            for m, c in MODALITIES[name].items()}


def timed(fn, steps, warmup):
    """Seconds per call of `fn` (blocking on its result) after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def forward_flops(model, inputs):
    """Forward FLOPs from TF's profiler on the concrete function at the static size."""
    import tensorflow as tf
    spec = {k: tf.TensorSpec(v.shape, tf.float32, name=k) for k, v in inputs.items()}
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops


def bench_tf(name, args):
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build(name, args)
    x = {k: tf.constant(v) for k, v in random_inputs(name, args).items()}
    labels = tf.constant(np.random.default_rng(1).integers(
        0, args.num_classes, size=(args.batch, args.height, args.width)), tf.int32)
    optimizer = keras.optimizers.Adam(1e-4)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.output_loss_weights

    @tf.function(jit_compile=args.xla)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.add_n([w * ce(y, out[k]) for k, w in weights.items()])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    infer = tf.function(lambda x: model(x, training=False)["logits"], jit_compile=args.xla)
    train_s = timed(lambda: train_step(x, labels).numpy(), args.steps, args.warmup)
    infer_s = timed(lambda: infer(x).numpy(), args.steps, args.warmup)
    return {"params": model.count_params(), "flops": forward_flops(model, x),
            "tf_train_img_s": args.batch / train_s, "tf_infer_img_s": args.batch / infer_s}


def bench_jax(name, args):
    """Forward img/s under jax.jit (runs inside the KERAS_BACKEND=jax subprocess)."""
    import jax
    import keras

    keras.utils.set_random_seed(0)
    model = build(name, args)
    x = random_inputs(name, args)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return out["logits"]

    seconds = timed(lambda: forward(trainable, non_trainable, x).block_until_ready(),
                    args.steps, args.warmup)
    return {"jax_infer_img_s": args.batch / seconds}


def run_jax_subprocess(name, args):
    env = dict(os.environ, KERAS_BACKEND="jax")
    argv = ["--models", name, "--jax-worker", "--height", str(args.height),
            "--width", str(args.width), "--batch", str(args.batch),
            "--width-mult", str(args.width_mult), "--num-classes", str(args.num_classes),
            "--steps", str(args.steps), "--warmup", str(args.warmup)]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                          env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JAX ")]
    if proc.returncode != 0 or not lines:
        return {"jax_error": proc.stderr.strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1][4:])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="adapnet_pp,ssma", help="comma list: adapnet_pp,ssma")
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--num-classes", type=int, default=12)
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (tracing, compile)")
    p.add_argument("--xla", action="store_true", help="jit_compile the TF functions")
    p.add_argument("--no-jax", action="store_true", help="skip the jax forward")
    p.add_argument("--jax-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODALITIES))
    if unknown:
        p.error(f"--models: unknown {unknown}, choose from {sorted(MODALITIES)}")
    if args.height % 16 or args.width % 16:
        p.error("--height and --width must be divisible by 16")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.jax_worker:
        print("JAX " + json.dumps(bench_jax(args.models[0], args)))
        return
    for name in args.models:
        result = bench_tf(name, args)
        if not args.no_jax:
            result.update(run_jax_subprocess(name, args))
        print(f"{name} {args.height}x{args.width} batch {args.batch} "
              f"width-mult {args.width_mult}: params {result['params'] / 1e6:.2f} M, "
              f"forward {result['flops'] / 1e9:.1f} GFLOPs (TF profiler), "
              f"TF train {result['tf_train_img_s']:.2f} img/s, "
              f"TF infer {result['tf_infer_img_s']:.2f} img/s, "
              + (f"jax infer {result['jax_infer_img_s']:.2f} img/s"
                 if "jax_infer_img_s" in result else f"jax: {result.get('jax_error', 'skipped')}"),
              flush=True)


if __name__ == "__main__":
    main()
