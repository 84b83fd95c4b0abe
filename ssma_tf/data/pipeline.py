"""tf.data input pipelines: seeded training streams (labeled / unlabeled / two views) and eval."""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from ssma_tf.data import schema
from ssma_tf.data.augment import augment
from ssma_tf.data.normalize import normalize
from ssma_tf.errors import InputError

AUTOTUNE = tf.data.AUTOTUNE
MAX_CYCLE_LENGTH = 16


def select_modalities(records, info, modalities):
    """{name: ModalitySpec} for `modalities`, in order; InputError naming the records if absent."""
    if not modalities:
        raise InputError(f"{records}: no modalities requested")
    known = {m.name: m for m in info.modalities}
    missing = [m for m in modalities if m not in known]
    if missing:
        raise InputError(f"{records}: no modality {missing[0]!r}; the records hold {list(known)}")
    return {name: known[name] for name in modalities}


def check_labels(records, info, num_classes, ignore_label, where):
    """InputError unless the records' labels fit `num_classes` (from `where`, the config):
    the sidecar's num_classes must not exceed it, and its class histogram must hold no id
    >= num_classes other than `ignore_label` (such pixels would silently leave loss and
    mIoU)."""
    if info.num_classes is not None and info.num_classes > num_classes:
        raise InputError(f"{where}: key 'num_classes' is {num_classes} but the records "
                         f"{records} hold {info.num_classes} classes (their sidecar)")
    histogram = info.class_histogram or []
    bad = [i for i, count in enumerate(histogram)
           if count and i >= num_classes and i != ignore_label]
    if bad:
        pixels = sum(histogram[i] for i in bad)
        raise InputError(f"{where}: the records {records} have label ids {bad[:10]} >= "
                         f"num_classes {num_classes} that are not ignore_label {ignore_label} "
                         f"({pixels} pixels); fix num_classes or ignore_label")


def check_crop(records, info, crop, scale_max, where):
    """The warning (also logged) when the crop (height, width) is larger than every image of
    the records at the largest scale, so every crop is partly padding (legal: the pipeline
    pads with 0 and ignore_label); None when it fits or the sidecar has no image sizes."""
    if not info.image_size:
        return None
    largest = info.image_size["max"]
    over = [(key, value, size) for key, value, size in zip(("height", "width"), crop, largest)
            if value > size * scale_max]
    if not over:
        return None
    key, value, size = over[0]
    message = (f"{where}: key '{key}' is {value} but the records {records} hold images of at "
               f"most {largest[0]}x{largest[1]} (HxW), {size * scale_max:g} at scale_max "
               f"{scale_max:g}: every training crop is partly padding; a smaller crop trains "
               f"faster on the same pixels")
    logging.warning("%s", message)
    return message


def _count(dataset):
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


def count_readable(path):
    """(records of one file that read before its first bad one, TensorFlow's message for
    that record ('corrupted record at OFFSET', 'truncated record at OFFSET') or None)."""
    try:
        return _count(tf.data.TFRecordDataset(path)), None
    except tf.errors.DataLossError as exc:
        problem = schema.op_free_message(exc.message)
    return _count(tf.data.TFRecordDataset(path).ignore_errors()), problem


def first_bad_record(path):
    """TensorFlow's message for the first unreadable record of one file, or None when the
    file reads whole."""
    return count_readable(path)[1]


def report_readable(records):
    """Count what training or evaluation with skip_corrupt_records reads of `records`
    (a corrupt file is read up to its first bad record: TensorFlow cannot resynchronise a
    TFRecord file, so the rest of it is skipped); log a warning per corrupt or short file
    with the counts read and expected (the sidecar's count per file, else its total) and
    return (read, expected or None); InputError when no record at all can be read."""
    files, info = schema.resolve_records(records)
    read, expected = 0, 0
    for name in files:
        count, problem = count_readable(name)
        wanted = info.expected_examples(name)
        short = wanted is not None and count < wanted
        if problem or short:
            lost = f"{wanted - count} lost" if wanted is not None else "the rest lost"
            logging.warning("%s: %s: read %d of %s records, %s (skip_corrupt_records)", name,
                            problem or "shorter than its sidecar says", count,
                            "?" if wanted is None else wanted, lost)
        read += count
        expected = None if wanted is None or expected is None else expected + wanted
    expected = expected or info.num_examples or None
    if not read:
        raise InputError(f"{records}: no record can be read, even with skip_corrupt_records "
                         "(every file is empty or corrupt from its first record); convert it "
                         "again")
    log = logging.warning if expected and read < expected else logging.info
    log("%s: read %d of %s records (skip_corrupt_records)", records, read, expected or "?")
    return read, expected


def record_error(records, exc):
    """InputError naming the file and offset of the first bad record in `records` (one
    records path or a list) after `exc` (a DataLossError) came out of a pipeline."""
    for path in [records] if isinstance(records, str) else [r for r in records if r]:
        files, _ = schema.resolve_records(path)
        for name in files:
            problem = first_bad_record(name)
            if problem:
                return InputError(f"{name}: {problem}: the file is corrupt or truncated, or "
                                  f"not a TFRecord file (records {path}); convert it again")
    return InputError(f"{records}: cannot read the records ({str(exc).splitlines()[0][:200]})")


def _decoder(info, specs, need_label):
    """A function decoding a serialized Example into the requested modalities (+ label)."""
    if not info.legacy:
        info = dataclasses.replace(info, modalities=list(specs.values()), labeled=need_label)

    def decode(serialized):
        example = schema.decode_example(serialized, info)
        return {k: v for k, v in example.items() if k in specs or (need_label and k == "label")}

    return decode


def _pipelines(input_context):
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def _file_reader(skip_corrupt):
    """TFRecordDataset, or with `skip_corrupt` one ending at a file's first bad record."""
    if not skip_corrupt:
        return tf.data.TFRecordDataset
    return lambda path: tf.data.TFRecordDataset(path).ignore_errors()


def _subset_reader(subset, skip_corrupt=False):
    """A file reader (_file_reader), or one keeping only one part of a seeded
    labeled/unlabeled split.

    subset = (ratio, seed, labeled_part): an example is in the labeled part when a hash of
    (file name, index in file, seed) falls below `ratio`, so the split is the same on every
    machine, worker and run, and the two parts are complementary (about ratio * N labeled).
    """
    reader = _file_reader(skip_corrupt)
    if subset is None:
        return reader
    ratio, split_seed, labeled_part = subset

    def read(path):
        name = tf.strings.regex_replace(path, r".*/", "")

        def keep(index, _):
            key = tf.strings.join([name, tf.strings.as_string(index), str(split_seed)], ":")
            draw = tf.cast(tf.strings.to_hash_bucket_fast(key, 1 << 30), tf.float64) / (1 << 30)
            return tf.equal(draw < ratio, labeled_part)

        return reader(path).enumerate().filter(keep).map(lambda _, s: s)

    return read


def _read(files, input_context, *, shuffle_files, seed, deterministic, subset=None,
          skip_corrupt=False):
    """Serialized examples of this input pipeline's share: whole files when there are enough
    of them, else every n-th example (shards are disjoint either way). `skip_corrupt`: a
    corrupt file ends at its first bad record instead of raising DataLossError."""
    num, index = _pipelines(input_context)
    ds = tf.data.Dataset.from_tensor_slices(files)
    by_file = num > 1 and len(files) >= num
    if by_file:
        ds = ds.shard(num, index)
    if shuffle_files and (by_file or num == 1):
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(_subset_reader(subset, skip_corrupt),
                       cycle_length=min(len(files), MAX_CYCLE_LENGTH),
                       num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if num > 1 and not by_file:
        ds = ds.shard(num, index)
    return ds


def train_dataset(records, *, modalities, batch_size, crop, ignore_label=255,
                  scale_range=(0.5, 2.0), flip=True, photometric=True, seed=None,
                  input_context=None, labeled=True, two_views=False, shuffle_buffer=256,
                  depth_max=10.0, repeat=True, subset=None, skip_corrupt=False):
    """Augmented training batches (batch_size is per replica, remainder dropped).

    labeled: (inputs {name: f32 [B,h,w,C]}, labels int32 [B,h,w]); unlabeled: inputs, or
    (view1, view2) with `two_views` (same geometry, independent colour jitter). Each example
    is augmented with a stateless seed from (seed, its position in the stream), so a seeded
    pipeline yields the same batches every run. ignore_label=None takes the records' own.
    subset=(ratio, seed, labeled_part) keeps one part of a seeded split (see _subset_reader);
    skip_corrupt: read a corrupt file up to its first bad record (report_readable counts).
    """
    files, info = schema.resolve_records(records)
    specs = select_modalities(records, info, modalities)
    if labeled and not info.labeled:
        raise InputError(f"{records}: records are unlabeled, cannot build a labeled stream")
    if labeled and two_views:
        raise InputError("two_views applies to the unlabeled stream only (labeled=False)")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    deterministic = seed is not None
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    _, pipeline_id = _pipelines(input_context)
    stream_seed = tf.constant([seed, pipeline_id], tf.int64)

    ds = _read(files, input_context, shuffle_files=True, seed=seed, deterministic=deterministic,
               subset=subset, skip_corrupt=skip_corrupt)
    if repeat:
        ds = ds.repeat()
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    decode = _decoder(info, specs, need_label=labeled)
    label_value = info.ignore_label if ignore_label is None else ignore_label

    def make_example(position, serialized):
        example_seed = tf.random.experimental.stateless_fold_in(stream_seed, position)
        views, label = augment(decode(serialized), specs, crop=crop, seed=example_seed,
                               ignore_label=label_value, scale_range=scale_range, flip=flip,
                               photometric=photometric, depth_max=depth_max,
                               num_views=2 if two_views else 1)
        if labeled:
            return views[0], label
        return tuple(views) if two_views else views[0]

    ds = ds.enumerate().map(make_example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def example_dataset(records, *, modalities, depth_max=10.0, input_context=None,
                    skip_corrupt=False):
    """One pass, in record order, of unaugmented full-size examples: (inputs {name: f32
    [H,W,C]}, labels int32 [H,W]) for labeled records, inputs alone for unlabeled ones
    (skip_corrupt as in train_dataset)."""
    files, info = schema.resolve_records(records)
    specs = select_modalities(records, info, modalities)
    decode = _decoder(info, specs, need_label=info.labeled)

    def make_example(serialized):
        example = decode(serialized)
        inputs = normalize({name: example[name] for name in specs}, specs, depth_max)
        return (inputs, tf.cast(example["label"][..., 0], tf.int32)) if info.labeled else inputs

    ds = _read(files, input_context, shuffle_files=False, seed=None, deterministic=True,
               skip_corrupt=skip_corrupt)
    return ds.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=True)


def eval_dataset(records, *, modalities, batch_size, size=None, ignore_label=255,
                 depth_max=10.0, input_context=None, skip_corrupt=False):
    """One pass of (inputs {name: f32 [B,H,W,C]}, labels int32 [B,H,W]) in record order
    (skip_corrupt as in train_dataset).

    size=None keeps every image at full size (batch_size > 1 needs equal sizes); size=(h, w)
    resizes: bilinear for images, nearest for raw depth and labels (so labels, including
    `ignore_label` pixels, keep their values, and depth holes stay exactly 0).
    """
    _, info = schema.resolve_records(records)
    if not info.labeled:
        raise InputError(f"{records}: records are unlabeled, evaluation needs labels")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    specs = select_modalities(records, info, modalities)
    ds = example_dataset(records, modalities=modalities, depth_max=depth_max,
                         input_context=input_context, skip_corrupt=skip_corrupt)
    if size is not None:
        size = [int(x) for x in size]

        def resize(inputs, label):
            inputs = {name: tf.image.resize(x, size, "nearest" if specs[name].encoding == "raw"
                                            else "bilinear") for name, x in inputs.items()}
            return inputs, tf.image.resize(label[..., None], size, "nearest")[..., 0]

        ds = ds.map(resize, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
