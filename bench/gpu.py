"""GPU timings of our Keras 3 models under jax, beside PyTorch references, in one process.

Device command (the machine has jax, torch, transformers but no TensorFlow or keras; the
keras wheels travel in .whl/, carried as an ignored path):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && \
        KERAS_BACKEND=jax python3 bench/gpu.py --out $OUT/gpu.json

The wheels (pass `carry: [".whl"]` to the device tool; .whl/ is git-ignored), for Python 3.12:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        keras==3.15.1 namex optree typing_extensions

Local smoke (CPU): KERAS_BACKEND=jax JAX_PLATFORMS=cpu python bench/gpu.py --smoke [--skip-torch]

Per model and precision (fp32; bf16 = keras policy "mixed_bfloat16" set before building,
the model rebuilt per precision), random weights, one random input:
  - b1 ms: median wall time of the jitted forward (model.stateless_call, training=False,
    "logits" only) at batch 1, after 2 warm-up calls, blocking on the result;
  - b8 img/s: batch 8 / median time of the same forward at batch 8;
  - train img/s: batch 8 / median time of one jitted training step: forward
    (training=True), softmax cross-entropy of "logits" (float32) against random labels,
    gradients, keras AdamW `stateless_apply` (weights, BN statistics and optimizer state
    donated and carried from step to step);
  - GFLOP/img: XLA's cost analysis of the compiled batch-1 forward (FLOPs of the HLO,
    a multiply-add = 2); TFLOP/s = that x images / time, and % of the card's peak
    (--peak-bf16-tflops / --peak-fp32-tflops; note fp32 convs and dots may run as TF32,
    whose dense peak is far above the plain fp32 figure); the train row uses the
    compiled train step's own count.
PyTorch references on the same device: transformers' SegformerForSemanticSegmentation
(MiT-b0 / b2 config by hand, random init; logits upsampled to the input as ours are) and
a DeepLab-v3+ R101 written here (torchvision resnet101, OS 16, ASPP 6/12/18 + image
pooling, 48-ch low level, two 3x3 256 convs, classifier). Same measurements; bf16 =
torch.autocast; eager with cudnn.benchmark (torch.compile with --torch-compile); TF32 is
allowed in torch to match XLA's default. ratio = our speed / theirs (>1: ours faster).
AdapNet++ / SSMA / LinearFusion have no PyTorch reference: the seed's published TITAN X
(Pascal) inference times are printed beside them.
"""

import argparse
import gc
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# jax and torch share the card: no preallocation, jax capped to part of the memory
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from timing import median_seconds  # noqa: E402  (bench/timing.py)

# name: builder key, modalities {name: channels}, (H, W), classes, torch reference,
# published seed figure (ms, 768x384 inference, TITAN X Pascal)
MODELS = {
    "adapnet_pp": dict(modalities={"rgb": 3}, size=(384, 768), classes=12, published=72.94),
    "ssma": dict(modalities={"rgb": 3, "depth": 3}, size=(384, 768), classes=12,
                 published=101.95),
    "segformer_b0": dict(modalities={"rgb": 3}, size=(384, 768), classes=19, torch="segformer"),
    "segformer_b2": dict(modalities={"rgb": 3}, size=(384, 768), classes=19, torch="segformer"),
    "linear_fusion_b0": dict(modalities={"rgb": 3, "depth": 1}, size=(384, 768), classes=13),
    "linear_fusion_b2": dict(modalities={"rgb": 3, "depth": 1}, size=(384, 768), classes=13),
    "deeplab_v3plus_r101": dict(modalities={"rgb": 3}, size=(512, 512), classes=21,
                                torch="deeplab"),
}
SMOKE_SIZE = {(384, 768): (64, 128), (512, 512): (64, 64)}
PRECISIONS = ("fp32", "bf16")
MIT = {  # SegformerConfig fields of the MiT variants (decoder 256 for b0, 768 for b2)
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
}


def log(*parts):
    print(*parts, flush=True)


def build(name, spec):
    """Our model `name` (random weights) under the current keras dtype policy."""
    classes, modalities = spec["classes"], spec["modalities"]
    variant = name.rsplit("_", 1)[-1]
    if name == "adapnet_pp":
        from ssma_tf.models.adapnet_pp import build_adapnet_pp
        return build_adapnet_pp(classes)
    if name == "ssma":
        from ssma_tf.models.ssma import build_ssma
        return build_ssma(classes, modalities)
    if name.startswith("segformer"):
        from ssma_tf.models.segformer import build_segformer
        return build_segformer(classes, variant=variant, xla_friendly=True,
                               decoder_dim=MIT[variant]["decoder_hidden_size"])
    if name.startswith("linear_fusion"):
        from ssma_tf.models.linear_fusion import build_linear_fusion
        return build_linear_fusion(classes, modalities, variant=variant, xla_friendly=True,
                                   decoder_dim=MIT[variant]["decoder_hidden_size"])
    from ssma_tf.models.deeplab import build_deeplab_v3plus
    return build_deeplab_v3plus(classes)


def random_batch(spec, batch, size, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = {m: rng.normal(size=(batch, *size, c)).astype("float32")
         for m, c in spec["modalities"].items()}
    y = rng.integers(0, spec["classes"], size=(batch, *size)).astype("int32")
    return x, y


def xla_flops(compiled):
    """FLOPs from XLA's cost analysis of a compiled program (None when unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def bench_ours(name, spec, precision, args):
    """{b1_ms, b8_ips, train_ips, flops_img, train_flops_img, params, compile_s} of one
    model in one precision, jitted under jax."""
    import jax
    import jax.numpy as jnp
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    keras.utils.set_random_seed(0)
    model = build(name, spec)
    size = spec["size"]
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    result = {"params": int(model.count_params()), "compile_s": 0.0}

    def forward(t, n, x):
        return model.stateless_call(t, n, x, training=False)[0]["logits"]

    def compile_(fn, *example, **jit):
        start = time.perf_counter()
        compiled = jax.jit(fn, **jit).lower(*example).compile()
        result["compile_s"] += time.perf_counter() - start
        return compiled

    for batch, key in ((1, "b1_s"), (args.batch, "bn_s")):
        x = jax.device_put(random_batch(spec, batch, size)[0])
        compiled = compile_(forward, trainable, non_trainable, x)
        if batch == 1:
            result["flops_img"] = xla_flops(compiled)
        result[key] = median_seconds(
            lambda: compiled(trainable, non_trainable, x).block_until_ready(), args.repeats)

    optimizer = keras.optimizers.AdamW(1e-4, weight_decay=1e-4)
    optimizer.build(model.trainable_variables)
    opt_vars = [v.value for v in optimizer.variables]

    def loss_fn(t, n, x, y):
        out, n = model.stateless_call(t, n, x, training=True)
        logp = jax.nn.log_softmax(out["logits"].astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1)), n

    def train_step(t, n, o, x, y):
        (loss, n), grads = jax.value_and_grad(loss_fn, has_aux=True)(t, n, x, y)
        t, o = optimizer.stateless_apply(o, grads, t)
        return t, n, o, loss

    x, y = jax.device_put(random_batch(spec, args.batch, size))
    step = compile_(train_step, trainable, non_trainable, opt_vars, x, y,
                    donate_argnums=(0, 1, 2))
    train_flops = xla_flops(step)
    result["train_flops_img"] = train_flops / args.batch if train_flops else None
    state = [jax.tree_util.tree_map(jnp.copy, s) for s in (trainable, non_trainable, opt_vars)]

    def one_step():
        *new_state, loss = step(*state, x, y)
        state[:] = new_state
        loss.block_until_ready()

    result["train_s"] = median_seconds(one_step, args.repeats)
    keras.backend.clear_session()
    jax.clear_caches()
    gc.collect()
    return result


# ---------------------------------------------------------------- PyTorch references

def torch_deeplab_v3plus(num_classes):
    """DeepLab-v3+ R101 (UniMatch's head; random init)."""
    import torch
    import torchvision
    from torch import nn
    from torch.nn import functional as F

    def cbr(cin, cout, k=1, d=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d,
                                       bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))

    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = cbr(2048, 256)

        def forward(self, x):
            pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
            return F.interpolate(pooled, x.shape[2:], mode="bilinear", align_corners=True)

    class DeepLabV3Plus(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet101(
                weights=None, replace_stride_with_dilation=[False, False, True])
            self.backbone.fc = nn.Identity()  # unused (and out of the parameter count)
            self.aspp = nn.ModuleList([cbr(2048, 256), *(cbr(2048, 256, 3, d)
                                                         for d in (6, 12, 18)), Pool()])
            self.project = cbr(5 * 256, 256)
            self.reduce = cbr(256, 48)
            self.fuse = nn.Sequential(cbr(304, 256, 3), cbr(256, 256, 3))
            self.classifier = nn.Conv2d(256, num_classes, 1)

        def forward(self, x):
            b = self.backbone
            c1 = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
            c4 = b.layer4(b.layer3(b.layer2(c1)))
            a = self.project(torch.cat([branch(c4) for branch in self.aspp], 1))
            a = F.interpolate(a, c1.shape[2:], mode="bilinear", align_corners=True)
            out = self.classifier(self.fuse(torch.cat([self.reduce(c1), a], 1)))
            return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)

    return DeepLabV3Plus()


def torch_segformer(variant, num_classes):
    """transformers' Segformer for MiT `variant` from a hand-written config (random init),
    logits upsampled to the input (align_corners=True, as our model does)."""
    from torch import nn
    from torch.nn import functional as F
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_labels=num_classes, num_attention_heads=[1, 2, 5, 8],
                             sr_ratios=[8, 4, 2, 1], patch_sizes=[7, 3, 3, 3],
                             strides=[4, 2, 2, 2], mlp_ratios=[4, 4, 4, 4], **MIT[variant])

    class Segformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = SegformerForSemanticSegmentation(config)

        def forward(self, x):
            logits = self.net(pixel_values=x).logits
            return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)

    return Segformer()


def bench_torch(name, spec, precision, args):
    """{b1_s, bn_s, train_s, params} of the PyTorch reference of `name`."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    if spec["torch"] == "segformer":
        model = torch_segformer(name.rsplit("_", 1)[-1], spec["classes"])
    else:
        model = torch_deeplab_v3plus(spec["classes"])
    model = model.to(device)
    result = {"params": sum(p.numel() for p in model.parameters())}
    fn = torch.compile(model) if args.torch_compile else model
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def inputs(batch):
        x, y = random_batch(spec, batch, spec["size"])
        x = torch.from_numpy(x["rgb"]).permute(0, 3, 1, 2).contiguous().to(device)
        return x, torch.from_numpy(y).long().to(device)

    model.eval()
    for batch, key in ((1, "b1_s"), (args.batch, "bn_s")):
        x, _ = inputs(batch)

        def forward():
            with torch.inference_mode(), autocast():
                fn(x)
            sync()

        result[key] = median_seconds(forward, args.repeats)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x, y = inputs(args.batch)

    def step():
        with autocast():
            loss = torch.nn.functional.cross_entropy(fn(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()

    result["train_s"] = median_seconds(step, args.repeats)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------- report

def row_summary(name, spec, precision, ours, ref, args):
    """The JSON row: our numbers, achieved TFLOP/s, the reference's and the ratios."""
    peak = args.peak_bf16_tflops if precision == "bf16" else args.peak_fp32_tflops
    h, w = spec["size"]
    row = {"model": name, "input": f"{'+'.join(spec['modalities'])} {w}x{h}",
           "precision": precision, "batch": args.batch, "params": ours["params"],
           "gflops_img": ours["flops_img"] and ours["flops_img"] / 1e9,
           "train_gflops_img": ours["train_flops_img"] and ours["train_flops_img"] / 1e9,
           "b1_ms": 1e3 * ours["b1_s"], "bn_img_s": args.batch / ours["bn_s"],
           "train_img_s": args.batch / ours["train_s"], "compile_s": ours["compile_s"],
           "peak_tflops": peak}
    for key, flops, ips in (("fwd", ours["flops_img"], row["bn_img_s"]),
                            ("train", ours["train_flops_img"], row["train_img_s"])):
        tflops = flops * ips / 1e12 if flops else None
        row[f"{key}_tflops"] = tflops
        row[f"{key}_pct_peak"] = tflops and 100 * tflops / peak
    if spec.get("published"):
        row["published_titanx_ms"] = spec["published"]
    if ref:
        row["ref"] = {"impl": spec["torch"], "params": ref["params"],
                      "mode": "torch.compile" if args.torch_compile else "eager, cudnn.benchmark",
                      "b1_ms": 1e3 * ref["b1_s"], "bn_img_s": args.batch / ref["bn_s"],
                      "train_img_s": args.batch / ref["train_s"]}
        row["ratio"] = {"b1": ref["b1_s"] / ours["b1_s"], "bn": ref["bn_s"] / ours["bn_s"],
                        "train": ref["train_s"] / ours["train_s"]}
    return row


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def markdown(rows, batch):
    head = ["model", "input", "prec", "params M", "GFLOP/img", "b1 ms", f"b{batch} img/s",
            "train img/s", "fwd TFLOP/s (% peak)", "train TFLOP/s (% peak)", "ref b1 ms",
            f"ref b{batch} img/s", "ref train img/s", f"ratio b1/b{batch}/train", "published ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref, ratio = r.get("ref", {}), r.get("ratio")
        cells = [r["model"], r["input"], r["precision"], fmt(r["params"] / 1e6, ".2f"),
                 fmt(r["gflops_img"]), fmt(r["b1_ms"], ".2f"), fmt(r["bn_img_s"]),
                 fmt(r["train_img_s"]),
                 f"{fmt(r['fwd_tflops'], '.1f')} ({fmt(r['fwd_pct_peak'], '.1f')}%)",
                 f"{fmt(r['train_tflops'], '.1f')} ({fmt(r['train_pct_peak'], '.1f')}%)",
                 fmt(ref.get("b1_ms"), ".2f"), fmt(ref.get("bn_img_s")),
                 fmt(ref.get("train_img_s")),
                 "/".join(f"x{ratio[k]:.2f}" for k in ("b1", "bn", "train")) if ratio else "-",
                 fmt(r.get("published_titanx_ms"), ".2f")
                 + (" (TITAN X Pascal, 768x384)" if r.get("published_titanx_ms") else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma list of " + ",".join(MODELS))
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list: fp32,bf16")
    p.add_argument("--smoke", action="store_true",
                   help="tiny inputs, batch 2, 1 timed run (local CPU check)")
    p.add_argument("--skip-torch", action="store_true", help="no PyTorch references")
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the references")
    p.add_argument("--repeats", type=int, default=10, help="timed runs (median)")
    p.add_argument("--batch", type=int, default=8, help="throughput / train-step batch")
    p.add_argument("--peak-bf16-tflops", type=float, default=790.0)
    p.add_argument("--peak-fp32-tflops", type=float, default=67.0)
    default_out = os.path.join(os.environ["OUT"], "gpu.json") if os.environ.get("OUT") \
        else "gpu.json"
    p.add_argument("--out", default=default_out, help="JSON path (default $OUT/gpu.json)")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.precisions = [m for m in args.precisions.split(",") if m]
    for flag, chosen, allowed in (("--models", args.models, MODELS),
                                  ("--precisions", args.precisions, PRECISIONS)):
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            p.error(f"{flag}: unknown {unknown}, choose from {list(allowed)}")
    if args.smoke:
        args.batch, args.repeats = 2, 1
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import jax
    import keras

    start = time.perf_counter()
    meta = {"jax": jax.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "devices": [str(d) for d in jax.devices()], "repeats": args.repeats,
            "batch": args.batch, "smoke": args.smoke, "torch": None}
    if not args.skip_torch:
        import torch
        meta["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available(),
                         "device": torch.cuda.get_device_name() if torch.cuda.is_available()
                         else "cpu", "mode": "torch.compile" if args.torch_compile
                         else "eager, cudnn.benchmark", "tf32": True}
    log(f"# bench/gpu.py: {meta}")
    rows, errors = [], []
    for name in args.models:
        spec = dict(MODELS[name])
        if args.smoke:
            spec["size"] = SMOKE_SIZE[spec["size"]]
        for precision in args.precisions:
            tag = f"{name} {precision}"
            try:
                ours = bench_ours(name, spec, precision, args)
            except Exception as e:  # noqa: BLE001 - keep the other rows
                errors.append(f"{tag}: {type(e).__name__}: {e}")
                log(f"[{time.perf_counter() - start:6.0f}s] {tag}: FAILED {errors[-1]}")
                continue
            ref = None
            if spec.get("torch") and not args.skip_torch:
                try:
                    ref = bench_torch(name, spec, precision, args)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{tag} torch: {type(e).__name__}: {e}")
                    log(f"  torch reference FAILED: {errors[-1]}")
            rows.append(row_summary(name, spec, precision, ours, ref, args))
            log(f"[{time.perf_counter() - start:6.0f}s] {tag}: {json.dumps(rows[-1])}")
        if rows or errors:  # after each model, so a timeout keeps what was done
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "rows": rows, "errors": errors}, f, indent=1)
    log(f"\n## {len(rows)} rows in {time.perf_counter() - start:.0f}s "
        f"(batch {args.batch}, median of {args.repeats}), JSON: {args.out}\n")
    log(markdown(rows, args.batch))
    for e in errors:
        log("ERROR", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
