"""Input pipeline throughput: ssma_tf tf.data training pipeline vs a cv2 Python loop.

Generates its own RGB-D samples (random smooth 8-bit RGB, 16-bit depth in mm with holes,
labels) as PNG files and as TFRecords in both image formats (PNG and raw pixels), then
measures images per second of decode + joint augmentation (scale 0.5-2, crop, flip, colour
jitter) + normalise + batch for the baseline and both record formats of the same samples, in
alternating rounds, and prints the medians, images per CPU-second, the ratios and PASS/FAIL
against the 3x target. Other work on the machine skews the numbers: it waits until the
1-minute load average is below --max-load and prints the load before and after.

    python bench/input_pipeline.py [--num 64] [--height 384 --width 768] [--batch 8]
"""

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssma_tf.data import schema  # noqa: E402
from ssma_tf.data.augment import BRIGHTNESS_DELTA, CONTRAST_RANGE, SATURATION_RANGE  # noqa: E402
from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ssma_tf.data.pipeline import train_dataset  # noqa: E402

SPECS = [schema.ModalitySpec("rgb", "color", 3, "uint8"),
         schema.ModalitySpec("depth", "raw", 1, "uint16")]
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def make_sample(rng, height, width):
    """Camera-like random images (smooth colour + noise), depth in mm with zero holes, labels."""
    coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    rgb = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    depth = np.linspace(500, 8000, height, dtype=np.float32)[:, None] * np.ones((1, width))
    depth = (depth + rng.normal(0, 20, depth.shape)).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.05] = 0
    label = cv2.resize(rng.integers(0, 19, (height // 32, width // 32), dtype=np.uint8),
                       (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth, label


def write_samples(folder, num, height, width, seed=0):
    """PNG files (for the baseline) and a TFRecord + sidecar per image format; returns
    (png triples, {format: record path})."""
    rng = np.random.default_rng(seed)
    records = {f: os.path.join(folder, f"bench_{f}.tfrecords") for f in schema.IMAGE_FORMATS}
    writers = {f: tf.io.TFRecordWriter(r) for f, r in records.items()}
    triples = []
    for i in range(num):
        rgb, depth, label = make_sample(rng, height, width)
        paths = [os.path.join(folder, f"{i:04d}_{kind}.png") for kind in ("rgb", "depth", "label")]
        cv2.imwrite(paths[0], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(paths[1], depth)
        cv2.imwrite(paths[2], label)
        for image_format, writer in writers.items():
            writer.write(schema.encode_example({"rgb": rgb, "depth": depth}, label, paths[:2],
                                               image_format))
        triples.append(paths)
    for image_format, writer in writers.items():
        writer.close()
        schema.DatasetInfo(modalities=SPECS, labeled=True, num_examples=num,
                           files=[os.path.basename(records[image_format])], num_classes=19,
                           image_format=image_format).write(schema.sidecar_path(records[image_format]))
    return triples, records


def numpy_augment(rgb, depth, label, rng, crop, scale_range, depth_max=10.0, ignore=255):
    """The same augmentation written the usual way: resize the whole image, pad, crop, flip,
    jitter and normalise in numpy."""
    scale = rng.uniform(*scale_range)
    h, w = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    pad_h, pad_w = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)))
        depth = np.pad(depth, ((0, pad_h), (0, pad_w)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=ignore)
    y = rng.integers(0, rgb.shape[0] - crop[0] + 1)
    x = rng.integers(0, rgb.shape[1] - crop[1] + 1)
    window = np.s_[y:y + crop[0], x:x + crop[1]]
    rgb, depth, label = rgb[window], depth[window], label[window]
    if rng.random() < 0.5:
        rgb, depth, label = rgb[:, ::-1], depth[:, ::-1], label[:, ::-1]
    rgb = rgb + rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    mean = rgb.mean(axis=(0, 1))
    rgb = (rgb - mean) * rng.uniform(*CONTRAST_RANGE) + mean
    grey = (rgb @ GREY_WEIGHTS)[..., None]
    rgb = np.clip(grey + (rgb - grey) * rng.uniform(*SATURATION_RANGE), 0.0, 1.0)
    rgb = (rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    depth = depth.astype(np.float32)[..., None] * (0.001 / depth_max)
    return rgb, depth, label.astype(np.int32)


def baseline_batches(triples, batch, crop, scale_range):
    """Batches from cv2.imread per sample + numpy augmentation in a Python loop."""
    rng = np.random.default_rng(0)
    index = 0
    while True:
        parts = []
        for _ in range(batch):
            rgb_path, depth_path, label_path = triples[index % len(triples)]
            index += 1
            rgb = cv2.cvtColor(cv2.imread(rgb_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            depth = cv2.imread(depth_path, cv2.IMREAD_UNCHANGED)
            label = cv2.imread(label_path, cv2.IMREAD_GRAYSCALE)
            parts.append(numpy_augment(rgb, depth, label, rng, crop, scale_range))
        yield [np.stack(column) for column in zip(*parts)]


def pipeline_batches(record, batch, crop, scale_range):
    """Batches from the ssma_tf training pipeline (decode + augment + batch + prefetch)."""
    return iter(train_dataset(record, modalities=["rgb", "depth"], batch_size=batch, crop=crop,
                              scale_range=scale_range, seed=0, shuffle_buffer=64))


def timed(iterator, batch, num_batches):
    """(images per wall second, images per CPU second of this process) over `num_batches`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(iterator)
    images = num_batches * batch
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def load_average():
    """The 1-minute load average (/proc/loadavg), or None where there is none."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def wait_for_quiet(max_load, max_wait):
    """Sleep until the 1-minute load is below `max_load` (at most `max_wait` s); the load."""
    deadline = time.monotonic() + max_wait
    load = load_average()
    while load is not None and load >= max_load and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(min(30.0, max(deadline - time.monotonic(), 0.0)))
        load = load_average()
    return load


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=64, help="samples generated")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--max-load", type=float, default=2.5,
                        help="wait until the 1-minute load average is below this")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait at most")
    parser.add_argument("--target", type=float, default=3.0, help="required speed-up")
    args = parser.parse_args(argv)
    crop = (args.height, args.width)
    scale_range = (0.5, 2.0)
    with tempfile.TemporaryDirectory() as folder:
        triples, records = write_samples(folder, args.num, args.height, args.width)
        sizes = {f: os.path.getsize(r) / args.num / 2**20 for f, r in records.items()}
        print(f"{args.num} samples {args.width}x{args.height} RGB-D, crop {crop[1]}x{crop[0]}, "
              f"scale {scale_range}, batch {args.batch}, {os.cpu_count()} CPUs; record MiB per "
              f"sample: " + ", ".join(f"{f} {size:.2f}" for f, size in sizes.items()))
        load_before = wait_for_quiet(args.max_load, args.max_wait)
        if load_before is not None and load_before >= args.max_load:
            print(f"warning: measuring at load {load_before:.2f} >= {args.max_load} after "
                  f"{args.max_wait:g} s; other work skews the numbers")
        baseline_name = "cv2.imread + numpy loop"
        names = {f: f"tf.data, {f} records" for f in records}
        rounds = {baseline_name: [], **{name: [] for name in names.values()}}
        baseline = baseline_batches(triples, args.batch, crop, scale_range)
        next(baseline)
        for _ in range(args.rounds):  # alternate, so all see the same machine load
            rounds[baseline_name].append(timed(baseline, args.batch, args.batches))
            for image_format, record in records.items():
                # A fresh iterator per round, dropped after it: a live tf.data iterator keeps
                # prefetching in the background and would take CPU from the next round.
                pipeline = pipeline_batches(record, args.batch, crop, scale_range)
                next(pipeline)
                rounds[names[image_format]].append(timed(pipeline, args.batch, args.batches))
                del pipeline
        load_after = load_average()
        medians = {name: np.median(np.array(r), axis=0) for name, r in rounds.items()}
        base_wall, base_cpu = medians[baseline_name]
        for name, (wall, cpu) in medians.items():
            ratio = "" if name == baseline_name else (
                f"  ratio {wall / base_wall:.2f}x images/s, {cpu / base_cpu:.2f}x per CPU-second")
            print(f"{name:25s}: {wall:6.1f} images/s  ({cpu:5.1f} images per CPU-second){ratio}")
        best = max(medians[name][0] / base_wall for name in names.values())
        print(f"load average (1 min) before {load_before}, after {load_after}; "
              f"median of {args.rounds} rounds")
        print(f"{'PASS' if best >= args.target else 'FAIL'}: best pipeline is {best:.2f}x the "
              f"baseline (target {args.target:g}x)")


if __name__ == "__main__":
    main()
