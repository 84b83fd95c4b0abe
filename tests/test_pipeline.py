"""Input pipeline: shapes, joint alignment, padding, jitter scope, determinism, sharding."""

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.data import schema
from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize
from ssma_tf.data.pipeline import eval_dataset, train_dataset
from ssma_tf.errors import InputError

H, W = 32, 48
SPECS = [schema.ModalitySpec("rgb", "color", 3, "uint8"),
         schema.ModalitySpec("depth", "raw", 1, "uint16"),
         schema.ModalitySpec("hha", "hha", 3, "uint8")]
ALL = ["rgb", "depth", "hha"]


def block_label(h=H, w=W, shift=0):
    """Labels 0..4 in 8x8 blocks: edges are axis aligned, so 3x3 windows reveal interiors."""
    y, x = np.mgrid[0:h, 0:w]
    return (((y // 8) + 2 * (x // 8) + shift) % 5).astype(np.uint8)


def make_sample(index, h=H, w=W):
    """Pixel values encode the label: R = 40*label, depth = 100*label + 100 mm; the example
    index is in the blue channel so sharding tests can tell examples apart."""
    label = block_label(h, w, shift=index)
    rgb = np.stack([label * 40, np.full_like(label, 128), np.full_like(label, index)], -1)
    depth = (label.astype(np.uint16) * 100 + 100)
    hha = np.stack([label * 50] * 3, -1).astype(np.uint8)
    return {"rgb": rgb, "depth": depth, "hha": hha}, label


def write_records(folder, num_examples=6, num_shards=1, labeled=True, h=H, w=W,
                  image_format="png"):
    """Records + sidecar of `make_sample` examples; returns the --record path."""
    record = str(folder / f"train_{image_format}.tfrecords")
    paths = schema.shard_paths(record, num_shards)
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i in range(num_examples):
        arrays, label = make_sample(i, h, w)
        writers[i % num_shards].write(
            schema.encode_example(arrays, label if labeled else None, [f"ex{i}"], image_format))
    for writer in writers:
        writer.close()
    info = schema.DatasetInfo(modalities=SPECS, labeled=labeled, num_examples=num_examples,
                              files=[p.split("/")[-1] for p in paths], num_classes=5,
                              image_format=image_format)
    info.write(schema.sidecar_path(record))
    return record


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("records"))


def first_batches(ds, n=1):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def depth_mm(normalised):
    return np.round(normalised * 10.0 / 0.001).astype(np.int64)


def red(normalised_rgb):
    return (normalised_rgb[..., 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0


def test_train_shapes_dtypes_and_static_batch(records):
    ds = train_dataset(records, modalities=ALL, batch_size=2, crop=(16, 24), seed=1)
    inputs_spec, labels_spec = ds.element_spec
    assert inputs_spec["rgb"].shape == (2, 16, 24, 3)
    assert inputs_spec["depth"].shape == (2, 16, 24, 1)
    assert labels_spec.shape == (2, 16, 24) and labels_spec.dtype == tf.int32
    (inputs, labels), = first_batches(ds)
    assert list(inputs) == ALL
    assert all(v.dtype == np.float32 for v in inputs.values())
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}


def test_label_and_images_stay_aligned(records):
    ds = train_dataset(records, modalities=ALL, batch_size=3, crop=(24, 40), seed=3,
                       photometric=False)
    checked = 0
    for inputs, labels in first_batches(ds, 4):
        mm = depth_mm(inputs["depth"][..., 0])
        padded = mm == 0
        assert np.all(labels[padded] == 255)
        np.testing.assert_array_equal(mm[~padded], labels[~padded].astype(np.int64) * 100 + 100)
        for r, lab in zip(red(inputs["rgb"]), labels):
            # bilinear colour is exact wherever the 3x3 label window (inside the crop) is constant
            framed = np.pad(lab.astype(np.int64), 1, constant_values=-1)
            win = np.lib.stride_tricks.sliding_window_view(framed, (3, 3))
            interior = (win.min((-1, -2)) == win.max((-1, -2))) & (lab != 255)
            np.testing.assert_allclose(r[interior], lab[interior] * 40.0, atol=0.05)
            checked += interior.sum()
    assert checked > 1000


def test_scale_below_one_pads_with_ignore_label_and_zeros(records):
    ds = train_dataset(records, modalities=ALL, batch_size=2, crop=(H, W), seed=0,
                       scale_range=(0.5, 0.5), ignore_label=7)
    (inputs, labels), = first_batches(ds)
    padded = labels == 7
    assert padded.mean() == pytest.approx(0.75, abs=0.01)
    assert np.all(inputs["depth"][..., 0][padded] == 0.0)
    assert np.all(inputs["rgb"][padded] == 0.0) and np.all(inputs["hha"][padded] == 0.0)
    assert np.all(inputs["depth"][..., 0][~padded] > 0.0)


def test_photometric_jitter_touches_colour_only(records):
    kwargs = dict(modalities=ALL, batch_size=2, crop=(16, 24), seed=5)
    (jit, labels_j), = first_batches(train_dataset(records, photometric=True, **kwargs))
    (plain, labels_p), = first_batches(train_dataset(records, photometric=False, **kwargs))
    np.testing.assert_array_equal(labels_j, labels_p)
    np.testing.assert_array_equal(jit["depth"], plain["depth"])
    np.testing.assert_array_equal(jit["hha"], plain["hha"])
    assert np.abs(jit["rgb"] - plain["rgb"]).max() > 0.05


def test_normalize_keeps_depth_holes_exactly_zero():
    specs = {s.name: s for s in SPECS}
    depth = tf.constant([[0, 1000], [0, 65535]], tf.uint16)[..., None]
    rgb = tf.fill([2, 2, 3], tf.constant(255, tf.uint8))
    hha = tf.constant([[0, 255]], tf.uint8)[..., None] * tf.ones([1, 1, 3], tf.uint8)
    out = normalize({"depth": depth, "rgb": rgb, "hha": hha}, specs, depth_max=10.0)
    d = out["depth"].numpy()[..., 0]
    assert d[0, 0] == 0.0 and d[1, 0] == 0.0
    assert d[0, 1] == pytest.approx(0.1)
    np.testing.assert_allclose(out["rgb"].numpy()[0, 0],
                               (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-6)
    np.testing.assert_allclose(out["hha"].numpy()[0, :, 0], [-1.0, 1.0])


def test_depth_holes_survive_augmentation(tmp_path):
    record = str(tmp_path / "holes.tfrecords")
    arrays, label = make_sample(0)
    arrays["depth"] = arrays["depth"].copy()
    arrays["depth"][:, ::2] = 0
    with tf.io.TFRecordWriter(record) as writer:
        writer.write(schema.encode_example(arrays, label, ["x"]))
    schema.DatasetInfo(modalities=SPECS, labeled=True, num_examples=1,
                       files=["holes.tfrecords"]).write(schema.sidecar_path(record))
    ds = train_dataset(record, modalities=["depth"], batch_size=1, crop=(16, 24), seed=2,
                       scale_range=(1.3, 1.7))
    (inputs, labels), = first_batches(ds, 1)
    mm = depth_mm(inputs["depth"][..., 0])
    assert (mm == 0).mean() > 0.2
    valid = mm > 0
    np.testing.assert_array_equal(mm[valid], labels[valid] * 100 + 100)  # never blended


def test_seeded_runs_are_equal_and_seeds_differ(records):
    def run(seed):
        return first_batches(train_dataset(records, modalities=ALL, batch_size=2, crop=(16, 24),
                                           seed=seed), 4)
    a, b, c = run(11), run(11), run(12)
    for x, y in zip(a, b):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    assert any(not np.array_equal(x[1], z[1]) for x, z in zip(a, c))


def example_ids(ds):
    ids = []
    for inputs, _ in ds:
        blue = (inputs["rgb"][..., 2].numpy() * IMAGENET_STD[2] + IMAGENET_MEAN[2]) * 255.0
        ids += [int(round(float(np.median(b)))) for b in blue]
    return ids


@pytest.mark.parametrize("num_shards", [1, 4])
def test_input_context_shards_are_disjoint(tmp_path, num_shards):
    record = write_records(tmp_path, num_examples=8, num_shards=num_shards)
    seen = []
    for index in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        ids = example_ids(train_dataset(record, modalities=["rgb"], batch_size=1, crop=(H, W),
                                        seed=4, input_context=ctx, repeat=False,
                                        scale_range=(1.0, 1.0), photometric=False))
        eval_ids = example_ids(eval_dataset(record, modalities=["rgb"], batch_size=1,
                                            input_context=ctx))
        assert sorted(ids) == sorted(eval_ids) and len(ids) == 4
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8))


def test_unlabeled_two_views_share_geometry(tmp_path):
    record = write_records(tmp_path, num_examples=4, labeled=False)
    ds = train_dataset(record, modalities=ALL, batch_size=2, crop=(16, 24), seed=8,
                       labeled=False, two_views=True)
    view1, view2 = first_batches(ds)[0]
    assert set(view1) == set(view2) == set(ALL)
    np.testing.assert_array_equal(view1["depth"], view2["depth"])
    np.testing.assert_array_equal(view1["hha"], view2["hha"])
    assert np.abs(view1["rgb"] - view2["rgb"]).max() > 0.05
    single = first_batches(train_dataset(record, modalities=["rgb"], batch_size=2, crop=(16, 24),
                                         seed=8, labeled=False))[0]
    assert set(single) == {"rgb"} and single["rgb"].shape == (2, 16, 24, 3)


def test_raw_records_give_the_same_batches_as_png(records, tmp_path):
    raw = write_records(tmp_path, image_format="raw")
    kwargs = dict(modalities=ALL, batch_size=2, crop=(24, 40), seed=3)
    for got, want in zip(first_batches(train_dataset(raw, **kwargs), 2),
                         first_batches(train_dataset(records, **kwargs), 2)):
        tf.nest.map_structure(np.testing.assert_array_equal, got, want)
    (inputs, labels), = first_batches(eval_dataset(raw, modalities=ALL, batch_size=6))
    np.testing.assert_array_equal(labels, np.stack([make_sample(i)[1] for i in range(6)]))


def test_eval_full_size_and_resized(records):
    inputs, labels = next(iter(eval_dataset(records, modalities=ALL, batch_size=2)))
    assert inputs["rgb"].shape == (2, H, W, 3) and labels.shape == (2, H, W)
    np.testing.assert_array_equal(labels[0].numpy(), block_label())
    inputs, labels = next(iter(eval_dataset(records, modalities=["depth"], batch_size=3,
                                            size=(16, 24))))
    assert inputs["depth"].shape == (3, 16, 24, 1) and labels.shape == (3, 16, 24)
    np.testing.assert_array_equal(depth_mm(inputs["depth"][..., 0].numpy()),
                                  labels.numpy() * 100 + 100)
    assert sum(int(b[1].shape[0]) for b in eval_dataset(records, modalities=["rgb"],
                                                        batch_size=4)) == 6


def test_bad_requests_name_the_problem(records, tmp_path):
    with pytest.raises(InputError, match="'nir'.*rgb"):
        train_dataset(records, modalities=["rgb", "nir"], batch_size=1, crop=(8, 8))
    with pytest.raises(InputError, match="unlabeled stream"):
        train_dataset(records, modalities=["rgb"], batch_size=1, crop=(8, 8), two_views=True)
    unlabeled = write_records(tmp_path, num_examples=1, labeled=False)
    with pytest.raises(InputError, match="unlabeled"):
        eval_dataset(unlabeled, modalities=["rgb"], batch_size=1)
