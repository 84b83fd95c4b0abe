"""The end-to-end demo on the embedded synthetic RGB-D set, CPU only.

  python demo.py [--out demo_output] [--semi]

1. generate the synthetic RGB-D scenes (PNG files + SSMA list files),
2. convert them to TFRecords (convert_to_tfrecords.py),
3. train the AdapNet++ RGB expert, the depth expert, then SSMA fusion on the frozen experts
   (train.py with configs/demo_*.config),
4. evaluate all three, and the fusion with each modality missing (evaluate.py),
5. export the fusion as a SavedModel for TF Serving (export.py),
6. print the result table (also written to <out>/results.md).

--semi then compares supervised, mean teacher, CPS and M3L with few labels
(configs/demo_semi_*.config), each evaluated with RGB-D, RGB only and depth only.
Every step reuses what an earlier run left in <out> (checkpoints resume), so an
interrupted demo continues where it stopped.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _step(text):
    print(f"\n=== {text}", flush=True)


def make_data(out, semi):
    """Synthetic set + records; returns {split: record path}."""
    from ssma_tf.data import synthetic
    from ssma_tf.data.convert import convert

    data_dir = os.path.join(out, "data")
    lists = {split: os.path.join(data_dir, f"{split}.txt") for split in ("train", "val")}
    if not all(os.path.exists(p) for p in lists.values()):
        _step("1. generating the synthetic RGB-D set")
        start = time.time()
        lists = synthetic.generate(data_dir, num_train=400, num_val=100, seed=0)
        print(f"   {len(lists)} list files in {time.time() - start:.1f} s: {data_dir}")
    records = {}
    for split in ("train", "val"):
        path = os.path.join(out, "records", f"{split}.tfrecords")
        if not os.path.exists(path):
            _step(f"2. converting {split} -> {path}")
            convert(lists[split], path, modalities=("rgb", "depth"),
                    num_classes=synthetic.NUM_CLASSES, command="demo.py")
        records[split] = path
    if semi:
        from ssma_tf.datasets.splits import make_splits

        records.update(_semi_records(out, lists["train"], make_splits, convert))
    return records


def _semi_records(out, train_list, make_splits, convert):
    """Labeled (1/20) and unlabeled records of the train list for the semi-supervised runs."""
    split_dir = os.path.join(out, "splits")
    files = make_splits(train_list, split_dir, ratios=["1/20"], seeds=[0])
    labeled, unlabeled = next(iter(files.values()))
    records = {}
    for name, path, is_unlabeled in (("labeled", labeled, False),
                                     ("unlabeled", unlabeled, True)):
        record = os.path.join(out, "records", f"{name}.tfrecords")
        if not os.path.exists(record):
            _step(f"2. converting the 1/20 split: {name} -> {record}")
            convert(path, record, modalities=("rgb", "depth"), unlabeled=is_unlabeled,
                    command="demo.py --semi")
        records[name] = record
    return records


def _overrides(out, records, run_name, extra=()):
    runs = os.path.join(out, "runs")
    return [f"checkpoint={os.path.join(runs, run_name)}",
            f"train_data={records['train']}", f"val_data={records['val']}",
            f"test_data={records['val']}", *extra]


def train_run(config_file, overrides):
    from ssma_tf.config import load_config
    from ssma_tf.training.trainer import train

    config = load_config(os.path.join(ROOT, "configs", config_file), overrides)
    if _finished(config):
        return config, None          # reused from an earlier demo: no training time to report
    start = time.time()
    train(config)
    return config, time.time() - start


def _finished(config):
    """True when the run's folder already holds the checkpoint of its last step."""
    import tensorflow as tf

    folder = config.checkpoint
    latest = tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None
    return bool(latest) and latest.endswith(f"ckpt-{config.max_iteration}")


def evaluate_run(config_file, overrides, missing=None):
    """evaluate.py's report for one config (missing='all' adds each modality missing)."""
    import evaluate

    args = ["--config", os.path.join(ROOT, "configs", config_file)]
    args += [f"--override={o}" for o in overrides]
    if missing:
        args += ["--missing-modality", missing]
    return evaluate.run_evaluation(evaluate._parser().parse_args(args))["results"]


def supervised_demo(out, records):
    """Experts, then SSMA on the frozen experts; returns the table rows."""
    runs = os.path.join(out, "runs")
    rows, seconds = [], {}
    for name, config_file in (("AdapNet++ RGB", "demo_adapnet_rgb_train.config"),
                              ("AdapNet++ depth", "demo_adapnet_depth_train.config")):
        run = "adapnet_rgb" if "RGB" in name else "adapnet_depth"
        _step(f"3. training {name}")
        _, seconds[name] = train_run(config_file, _overrides(out, records, run))
    _step("3. training SSMA fusion (experts frozen)")
    fusion = _overrides(out, records, "ssma", [
        f"checkpoint1={os.path.join(runs, 'adapnet_rgb')}",
        f"checkpoint2={os.path.join(runs, 'adapnet_depth')}"])
    _, seconds["SSMA"] = train_run("demo_ssma_train.config", fusion)

    _step("4. evaluating on the validation set")
    rgb = evaluate_run("demo_adapnet_rgb_test.config", _overrides(out, records, "adapnet_rgb"))
    depth = evaluate_run("demo_adapnet_depth_test.config",
                         _overrides(out, records, "adapnet_depth"))
    ssma = evaluate_run("demo_ssma_test.config", _overrides(out, records, "ssma"), "all")
    rows.append(("AdapNet++ RGB expert", "rgb", rgb["full"], seconds["AdapNet++ RGB"]))
    rows.append(("AdapNet++ depth expert", "depth", depth["full"], seconds["AdapNet++ depth"]))
    rows.append(("SSMA fusion", "rgb + depth", ssma["full"], seconds["SSMA"]))
    rows.append(("SSMA fusion, depth missing", "rgb", ssma["no depth"], None))
    rows.append(("SSMA fusion, rgb missing", "depth", ssma["no rgb"], None))

    _step("5. exporting SSMA as a SavedModel")
    import export

    export_dir = os.path.join(out, "exported", "ssma")
    status = export.main(
        ["--config", os.path.join(ROOT, "configs", "demo_ssma_test.config"),
         "--output", export_dir] + [f"--override={o}" for o in _overrides(out, records, "ssma")])
    if status:
        raise SystemExit(f"export failed with status {status}")
    return rows


def semi_demo(out, records):
    """Supervised vs mean teacher vs CPS vs M3L on 1/20 labels; rows for each input set."""
    rows = []
    labeled = [f"train_data={records['labeled']}", f"unlabeled_data={records['unlabeled']}",
               f"val_data={records['val']}", f"test_data={records['val']}"]
    for framework in ("supervised", "mean_teacher", "cps", "m3l"):
        run = os.path.join(out, "runs", f"semi_{framework}")
        overrides = [f"checkpoint={run}", *labeled]
        config_file = "demo_semi_train.config" if framework == "supervised" else \
            f"demo_semi_{framework}.config"
        _step(f"semi-supervised: training LinearFusion with {framework} (1/20 labels)")
        _, seconds = train_run(config_file, overrides)
        results = evaluate_run("demo_semi_test.config", [*overrides, f"framework={framework}"],
                               "all")
        print("   mIoU: " + ", ".join(f"{k} {100 * v['miou']:.1f}" for k, v in results.items()))
        rows.append((f"LinearFusion, {framework}", "rgb + depth", results["full"], seconds))
        rows.append((f"LinearFusion, {framework}, depth missing", "rgb", results["no depth"],
                     None))
        rows.append((f"LinearFusion, {framework}, rgb missing", "depth", results["no rgb"], None))
    return rows


def table(rows, class_names):
    """Markdown table: model, input, mIoU, per-class IoU, training time."""
    head = "| model | input | mIoU | " + " | ".join(class_names) + " | train s |"
    lines = [head, "|" + "---|" * (len(class_names) + 4)]
    for name, inputs, result, seconds in rows:
        ious = [result["per_class_iou"].get(c) for c in class_names]
        cells = ["–" if v is None else f"{100 * v:.1f}" for v in ious]
        time_cell = "" if seconds is None else f"{seconds:.0f}"
        lines.append(f"| {name} | {inputs} | **{100 * result['miou']:.1f}** | "
                     + " | ".join(cells) + f" | {time_cell} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_output"))
    parser.add_argument("--semi", action="store_true", help="also run the semi-supervised table")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from ssma_tf.data import synthetic

    start = time.time()
    out = os.path.abspath(args.out)
    records = make_data(out, args.semi)
    rows = supervised_demo(out, records)
    report = ["## Demo: SSMA on the synthetic RGB-D set (validation mIoU, %)", "",
              table(rows, synthetic.CLASS_NAMES)]
    if args.semi:
        report += ["", "## Semi-supervised, 1/20 of the labels (validation mIoU, %)", "",
                   table(semi_demo(out, records), synthetic.CLASS_NAMES)]
    report += ["", "train s: seconds of training in this invocation (blank: the run was reused "
               f"from an earlier one). Total demo time: {time.time() - start:.0f} s."]
    text = "\n".join(report)
    print("\n" + text)
    from ssma_tf.io_utils import atomic_write

    with atomic_write(os.path.join(out, "results.md")) as handle:
        handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
