"""U2PL: the entropy split, the memory bank, anchor sampling and InfoNCE on tiny tensors by
hand; the unsupervised loss's scaling; steps under one and two replicas; train() with resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from framework_testing import NUM_CLASSES, H, L, U, W, batches
from ssma_tf.config import config_from_dict
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import u2pl, u2pl_contrast
from ssma_tf.frameworks.build import build_framework
from ssma_tf.optim.optimizers import split_variables
from ssma_tf.training import checkpoints
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.run_info import read_run_info
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_records

SMALL = {"rep_dim": 8, "rep_channels": 8, "num_queries": 16, "num_negatives": 4,
         "queue_size": 4000, "background_queue_size": 5000, "low_rank": 1}
TINIER = {"width_multiplier": 0.0625}          # the train() runs' AdapNet++
TINY_ADAPNET = {"model": "AdapNet_pp", "width_multiplier": 0.125, "backbone_units": [1, 1, 1, 1]}
TINY_DEEPLAB = {"model": "deeplabv3plus", "backbone": "resnet50", "backbone_units": [1, 1, 1, 1],
                "width_multiplier": 0.0625, "head": "u2pl"}


def tiny_builder(modalities=("rgb",)):
    """A model builder: per modality a conv, concatenated, BN-ReLU, a stride-2 "decoder"
    feature, logits upsampled to the input."""
    def build(features=()):
        inputs = {m: keras.Input((None, None, 1 if m == "depth" else 3), name=m)
                  for m in modalities}
        x = keras.layers.Concatenate()([keras.layers.Conv2D(4, 3, padding="same",
                                                            name=f"conv_{m}")(inputs[m])
                                        for m in modalities] + [keras.ops.zeros_like(
                                            inputs[modalities[0]][..., :1])])
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv_bn")(x))
        feature = keras.layers.AveragePooling2D(2, name="decoder")(x)
        logits = keras.layers.UpSampling2D(2, interpolation="bilinear")(
            keras.layers.Conv2D(NUM_CLASSES, 1, name="classifier")(feature))
        outputs = {"logits": logits}
        if "decoder" in features:
            outputs["feature_decoder"] = feature
        return keras.Model(inputs, outputs)
    return build


def make(strategy=None, modalities=("rgb",), **overrides):
    config = config_from_dict({
        "framework": "u2pl", **TINY_ADAPNET, "num_classes": NUM_CLASSES, "batch_size": L,
        "unlabeled_batch_size": U, "height": H, "width": W, "max_iteration": 10,
        "modalities": list(modalities), **SMALL, **overrides}, "test")
    return build_framework(config, strategy, model_builder=tiny_builder(modalities))


# --- the entropy split ---------------------------------------------------------------------

def test_percentile_is_numpys_linear_one_over_the_masked_values():
    values = tf.constant([[0.5, 0.1, 9.0], [0.3, 0.7, 0.2]])
    mask = tf.constant([[True, True, False], [True, True, True]])
    for q in (0.0, 20.0, 50.0, 80.0, 100.0):
        expected = np.percentile([0.5, 0.1, 0.3, 0.7, 0.2], q)
        assert float(u2pl_contrast.percentile(values, mask, q)) == pytest.approx(expected)
    assert float(u2pl_contrast.percentile(values, tf.zeros_like(mask), 50.0)) == 0.0


def test_alpha_20_marks_the_lowest_and_highest_fifth_reliable_and_unreliable():
    entropy = tf.constant(np.arange(1, 12) / 10.0, tf.float32)      # 0.1 .. 1.1
    valid = tf.constant([True] * 10 + [False])                      # 1.1 is not valid
    # numpy: 20th percentile of 0.1..1.0 = 0.28, 80th = 0.82
    reliable, unreliable = u2pl_contrast.reliability_masks(entropy, valid, 20.0)
    assert np.flatnonzero(reliable.numpy()).tolist() == [0, 1]       # 0.1, 0.2
    assert np.flatnonzero(unreliable.numpy()).tolist() == [8, 9]     # 0.9, 1.0
    kept = u2pl_contrast.keep_reliable(entropy, valid, 20.0)          # below 0.82
    assert np.flatnonzero(kept.numpy()).tolist() == list(range(8))
    reliable, unreliable = u2pl_contrast.reliability_masks(entropy, valid, 5.0)
    assert np.flatnonzero(reliable.numpy()).tolist() == [0]          # <= 0.145
    assert np.flatnonzero(unreliable.numpy()).tolist() == [9]        # >= 0.955


def test_the_percentages_fall_linearly_and_per_epoch_with_epoch_steps():
    fw = make(max_iteration=100)
    fw.step.assign(25)
    assert float(fw.percent(20.0)) == pytest.approx(15.0)
    fw.config = fw.config.replace(epoch_steps=10)
    assert float(fw.percent(20.0)) == pytest.approx(16.0)            # epoch 2 of 10


# --- the memory bank -----------------------------------------------------------------------

def _contents(bank, c):
    return bank.contents(c).numpy()[:, 0].tolist()


def test_the_queue_is_a_ring_buffer_that_keeps_the_latest_keys():
    bank = u2pl_contrast.MemoryBank([3, 2], dim=1)

    def push(values, classes):
        bank.push(tf.constant(values, tf.float32)[:, None], tf.constant(classes))

    push([1, 2], [[1, 0], [1, 1]])
    assert _contents(bank, 0) == [1, 2] and _contents(bank, 1) == [2]
    assert bank.pointers.numpy().tolist() == [2, 1] and bank.counts.numpy().tolist() == [2, 1]
    push([3, 4], [[1, 1], [1, 1]])                 # class 0 wraps: 4 overwrites 1
    assert _contents(bank, 0) == [2, 3, 4] and _contents(bank, 1) == [3, 4]
    assert bank.keys.numpy()[:3, 0].tolist() == [4, 2, 3]
    assert bank.pointers.numpy().tolist() == [1, 1] and bank.counts.numpy().tolist() == [3, 2]
    push([5, 6, 7, 8], [[1, 0]] * 4)               # more than the capacity: the last 3
    assert _contents(bank, 0) == [6, 7, 8] and _contents(bank, 1) == [3, 4]
    assert bank.pointers.numpy().tolist() == [1, 1]
    push([], np.zeros([0, 2], bool))               # nothing to push changes nothing
    assert _contents(bank, 0) == [6, 7, 8]
    draws = bank.sample(tf.constant(0), 200, tf.constant([1, 2], tf.int64)).numpy()[:, 0]
    assert set(draws.tolist()) == {6.0, 7.0, 8.0}


# --- anchors, negatives, InfoNCE -----------------------------------------------------------

def test_anchor_sampling_draws_count_rows_among_the_masked_ones_with_replacement():
    mask = tf.constant([False, True, False, True, True])
    rows = u2pl_contrast.sample_indices(mask, 60, tf.constant([3, 4], tf.int64)).numpy()
    assert rows.shape == (60,) and set(rows.tolist()) == {1, 3, 4}
    empty = u2pl_contrast.sample_indices(tf.zeros([5], tf.bool), 7, tf.constant([3, 4],
                                                                               tf.int64))
    assert empty.numpy().tolist() == [0] * 7


def test_info_nce_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    anchors, positive = rng.normal(size=(3, 4)), rng.normal(size=4)
    negatives = rng.normal(size=(3, 2, 4))

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    keys = np.concatenate([np.broadcast_to(positive, (3, 1, 4)), negatives], 1)
    logits = np.einsum("kd,kmd->km", unit(anchors), unit(keys)) / 0.5
    expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    got = u2pl_contrast.info_nce(*(tf.constant(x, tf.float32) for x in (anchors, positive,
                                                                        negatives)), 0.5)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_negatives_code_needs_the_label_to_be_the_class_paper_does_not():
    # three pixels: labeled (label 0), unlabeled (label 2), unlabeled (label 1); 3 classes
    probs = tf.constant([[0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1]])
    labels = tf.constant([0, 2, 1])
    unreliable = tf.constant([True, True, True])
    labeled = tf.constant([True, False, False])
    args = dict(num_classes=3, low_rank=1, high_rank=3, negative_threshold=1.0)
    code = u2pl_contrast.negative_candidates(labels, probs, unreliable, labeled, mode="code",
                                             **args).numpy()
    paper = u2pl_contrast.negative_candidates(labels, probs, unreliable, labeled,
                                              mode="paper", **args).numpy()
    # code: labeled rows never (top-1 but not the label); row 1: class 2 ranks 2 and is the
    # label; row 2: class 1 ranks 0 (not in [1, 3))
    assert code.astype(int).tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
    # paper: labeled row: class 0 is top-1 but the label -> none; row 1: classes 1, 2 rank
    # 1, 2; row 2: classes 0, 2
    assert paper.astype(int).tolist() == [[0, 0, 0], [0, 1, 1], [1, 0, 1]]


def test_the_contrastive_loss_is_zero_with_one_valid_class_and_pushes_negatives_first():
    settings = u2pl_contrast.ContrastSettings(num_classes=2, num_queries=4, num_negatives=2,
                                              low_rank=1, high_rank=2)
    bank = u2pl_contrast.MemoryBank([10, 10], dim=2)
    rep = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = tf.constant([0, 0, 2])                  # class 2 = invalid (not a class)
    probs = tf.constant([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    yes = tf.constant([True, True, False])
    loss = u2pl_contrast.contrastive_loss(rep, rep, labels, probs, yes, yes,
                                          tf.constant([False] * 3), bank, settings,
                                          tf.constant([0, 1], tf.int64))
    assert float(loss) == 0.0                        # only class 0 is valid
    assert bank.counts.numpy().tolist() == [1, 0]    # pixel 1: label 0 ranked 2nd
    np.testing.assert_array_equal(bank.contents(0).numpy(), [[0.0, 1.0]])


def test_with_two_classes_the_loss_is_the_mean_infonce_against_prototype_and_queue():
    settings = u2pl_contrast.ContrastSettings(num_classes=2, num_queries=8, num_negatives=3,
                                              anchor_threshold=0.0, low_rank=1, high_rank=2)
    bank = u2pl_contrast.MemoryBank([10, 10], dim=2)
    bank.push(tf.constant([[0.0, 1.0]]), tf.constant([[True, True]]))
    # one reliable pixel per class: anchors = the pixel, prototype = the pixel, negatives =
    # the queued (0, 1); nothing unreliable, so nothing new is queued
    rep = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    probs = tf.constant([[0.9, 0.1], [0.1, 0.9]])
    loss = u2pl_contrast.contrastive_loss(
        rep, rep, tf.constant([0, 1]), probs, tf.constant([True, True]),
        tf.constant([False, False]), tf.constant([False, False]), bank, settings,
        tf.constant([0, 1], tf.int64))

    def term(anchor):
        a = anchor / np.linalg.norm(anchor)
        logits = np.array([1.0] + [a[1]] * 3) / 0.5    # cos(a, a) = 1, cos(a, (0, 1))
        return np.log(np.exp(logits).sum()) - logits[0]
    expected = (term(np.array([1.0, 0.0])) + term(np.array([1.0, 1.0]))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert bank.counts.numpy().tolist() == [1, 1]


# --- CutMix, resizing, the unsupervised loss -----------------------------------------------

def test_u2pl_cutmix_boxes_cover_half_the_image_and_take_the_next_row():
    masks = u2pl.half_box_masks(tf.constant([5, 6], tf.int64), 64, 20, 30).numpy()
    for mask in masks:
        rows, cols = np.nonzero(mask)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert mask.sum() == height * width                        # one rectangle
        assert 16 <= width <= 29 and height == round(300 / width)
    x = tf.reshape(tf.range(3, dtype=tf.float32), [3, 1, 1, 1]) * tf.ones([3, 2, 2, 1])
    mixed = u2pl.mix_with_next(x, tf.constant([[[True, False], [False, False]]] * 3))
    assert mixed[:, 0, 0, 0].numpy().tolist() == [1.0, 2.0, 0.0]   # row i <- row i+1
    assert mixed[:, 1, 1, 0].numpy().tolist() == [0.0, 1.0, 2.0]


def test_nearest_resize_takes_floor_of_i_times_the_scale():
    x = tf.reshape(tf.range(8 * 6), [1, 8, 6])
    small = u2pl.nearest_resize(x, tf.constant([4, 2])).numpy()[0]
    np.testing.assert_array_equal(small, x.numpy()[0][[0, 2, 4, 6]][:, [0, 3]])


def test_the_unsupervised_loss_is_the_kept_mean_times_pixels_over_kept():
    fw = make()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(U, H, W, NUM_CLASSES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (U, H, W)).astype("int32")
    labels[0, 0] = 255
    entropy = rng.random((U, H, W)).astype("float32")
    targets = u2pl.UnlabeledTargets(tf.constant(labels), tf.constant(entropy))
    outputs = {name: tf.constant(logits) for name in fw.pixel_loss_weights}
    got = float(fw.consistency_loss(targets, outputs, 2 * U))   # half the global batch
    valid = labels != 255
    keep = valid & (entropy < np.percentile(entropy[valid], 80))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    mean = ce[keep].mean() * labels.size / keep.sum()
    expected = sum(fw.pixel_loss_weights.values()) * mean / 2
    assert got == pytest.approx(expected, rel=1e-5)


# --- the framework ---------------------------------------------------------------------------

def test_the_model_gets_a_representation_head_and_deeplabs_head_trains_with_the_decoder():
    config = config_from_dict({"framework": "u2pl", **TINY_DEEPLAB, "num_classes": NUM_CLASSES,
                               "height": H, "width": W, "modalities": ["rgb"], **SMALL},
                              "test")
    fw = build_framework(config)
    outputs = fw.model({"rgb": tf.zeros([1, H, W, 3])}, training=False)
    assert outputs["rep"].shape == (1, H // 4, W // 4, 8)
    groups = split_variables(fw.model)
    decoder = {v.path.split("/")[-2] for v in groups["decoder"]}
    assert {"rep_conv1", "rep_conv2"} <= decoder
    assert any(name.startswith("aspp") for name in decoder)      # the encoder's ASPP too
    with pytest.raises(ConfigError, match="pseudo_targets"):
        make(pseudo_targets="per_output")


def test_a_model_without_a_decoder_feature_is_refused_by_name():
    config = config_from_dict({"framework": "u2pl", "model": "deeplabv2", "backbone": "resnet50",
                               "backbone_units": [1, 1, 1, 1], "width_multiplier": 0.0625,
                               "num_classes": NUM_CLASSES, "height": H, "width": W,
                               "modalities": ["rgb"]}, "test")
    with pytest.raises(ConfigError, match="model deeplabv2 has no feature 'decoder'"):
        build_framework(config)


def test_cutmix_mixes_every_modality_and_the_pseudo_labels_with_one_box():
    modalities = ("rgb", "depth")
    (inputs_l, labels), inputs_u = batches(list(modalities))
    plain = make(modalities=modalities, cutmix_prob=0.0)
    batch, _, targets, _ = plain._prepare(inputs_l, labels, inputs_u)
    for m in modalities:
        np.testing.assert_array_equal(batch[m][L:].numpy(), inputs_u[m].numpy())
    fw = make(modalities=modalities, cutmix_prob=1.0)
    fw.step.assign(1)                          # past the first step's teacher copy
    pseudo = fw.pseudo_targets(fw.teacher_forward(inputs_u), inputs=inputs_u).numpy()
    batch, _, targets, _ = fw._prepare(inputs_l, labels, inputs_u)
    np.testing.assert_array_equal(targets.labels[:L].numpy(), labels.numpy())
    np.testing.assert_array_equal(batch["rgb"][:L].numpy(), inputs_l["rgb"].numpy())
    rgb, depth = batch["rgb"][L:].numpy(), batch["depth"][L:].numpy()
    taken = np.all(rgb == np.roll(inputs_u["rgb"].numpy(), -1, axis=0), axis=-1)
    kept = np.all(rgb == inputs_u["rgb"].numpy(), axis=-1)
    assert np.all(taken ^ kept) and 0.4 < taken.mean() < 0.6        # one half-image box
    depth_u = inputs_u["depth"].numpy()[..., 0]
    np.testing.assert_array_equal(depth[..., 0],
                                  np.where(taken, np.roll(depth_u, -1, axis=0), depth_u))
    np.testing.assert_array_equal(targets.labels[L:].numpy(),
                                  np.where(taken, np.roll(pseudo, -1, axis=0), pseudo))
    assert targets.entropy.shape == (L + U, H, W)


def test_the_supervised_only_phase_leaves_teacher_and_queues_then_the_teacher_copies():
    fw = make(sup_only_steps=1)
    teacher = [w.numpy().copy() for w in fw.teacher.trainable_weights]
    (labeled, _), unlabeled = batches(["rgb"]), batches(["rgb"])[1]
    fw.supervised_only_step(labeled)
    fw.step.assign(1)
    assert fw.memory_bank.counts.numpy().sum() == 0
    for before, after in zip(teacher, fw.teacher.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())
    fw.train_step(labeled, unlabeled)          # ssl step 0: copy, then EMA decay 0
    for student, after in zip(fw.model.trainable_weights, fw.teacher.trainable_weights):
        np.testing.assert_allclose(student.numpy(), after.numpy(), rtol=1e-6)
    assert fw.memory_bank.counts.numpy().sum() > 0


def test_steps_train_the_student_fill_the_queues_and_restore_from_a_checkpoint(tmp_path):
    fw = make()
    step = tf.function(fw.train_step)
    data = batches(["rgb"])
    before = [w.numpy().copy() for w in fw.model.trainable_weights]
    for _ in range(2):
        logs = {k: float(v) for k, v in step(*data).items()}
        fw.step.assign_add(1)
    assert {"supervised_loss", "consistency_loss", "contrast_loss"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values()) and logs["contrast_loss"] > 0
    assert not np.allclose(before[-1], fw.model.trainable_weights[-1].numpy())
    assert fw.memory_bank.counts.numpy().sum() > 0
    prefix = tf.train.Checkpoint(step=fw.step, **checkpoints.trackable(
        fw.checkpoint_items())).save(str(tmp_path / "ckpt"))
    fresh = make()
    tf.train.Checkpoint(step=fresh.step, **checkpoints.trackable(
        fresh.checkpoint_items())).restore(prefix).assert_existing_objects_matched()
    for a, b in zip(fw.teacher.weights, fresh.teacher.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ("keys", "pointers", "counts"):
        np.testing.assert_array_equal(getattr(fw.memory_bank, name).numpy(),
                                      getattr(fresh.memory_bank, name).numpy())


def test_two_replicas_hold_identical_queues_of_both_replicas_keys():
    data = batches(["rgb"])
    single = make(cutmix=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = make(strategy, cutmix=False, batch_size=2 * L, unlabeled_batch_size=2 * U)
    mirrored.model.set_weights(single.model.get_weights())
    single.train_step(*data)

    @tf.function
    def step():
        return strategy.run(mirrored.train_step, args=data)

    step()
    bank = mirrored.memory_bank
    for var in (bank.keys, bank.pointers, bank.counts):
        replicas = [v.numpy() for v in var.values]
        np.testing.assert_array_equal(replicas[0], replicas[1])
    # each replica saw the same batch: the queues hold both replicas' keys
    counts = bank.counts.values[0].numpy()
    assert counts.tolist() == (2 * single.memory_bank.counts.numpy()).tolist()
    assert counts.sum() > 0


# --- through the trainer -------------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


def _saved(folder):
    """(step, {keys, pointers, counts}) of the memory bank in the latest checkpoint."""
    reader = tf.train.load_checkpoint(folder)
    bank = {name: reader.get_tensor(f"memory_bank/{name}/.ATTRIBUTES/VARIABLE_VALUE")
            for name in ("keys", "pointers", "counts")}
    return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")), bank


def test_u2pl_trains_through_train_and_resumes_with_its_queues(tmp_path, records):
    keys = dict(framework="u2pl", unlabeled_data=records, summary_step=0, **SMALL)
    first = tiny_config(tmp_path, records, {**TINY_ADAPNET, **TINIER}, max_iteration=2, **keys)
    train(first)
    step, saved = _saved(first.checkpoint)
    counts = saved["counts"]
    assert step == 2 and counts.sum() > 0 and counts.tolist() == saved["pointers"].tolist()
    resumed = first.replace(max_iteration=3)                    # the run killed at step 2
    train(resumed)
    assert read_run_info(resumed.checkpoint)["start_step"] == 2
    step, later = _saved(resumed.checkpoint)
    assert step == 3 and np.all(later["counts"] >= counts)
    assert later["counts"].sum() > counts.sum()
    offsets = [0, SMALL["background_queue_size"]]    # class 0's queue, then class 1's
    for offset, count in zip(offsets, counts):  # the old keys are still first, new ones after
        np.testing.assert_array_equal(later["keys"][offset:offset + count],
                                      saved["keys"][offset:offset + count])


def test_u2pl_trains_linearfusion_on_rgb_and_depth(tmp_path, records):
    model_keys = {"model": "linearfusion", "backbone": "tiny", "decoder_dim": 16}
    config = tiny_config(tmp_path, records, model_keys, modalities=["rgb", "depth"],
                         framework="u2pl", unlabeled_data=records, max_iteration=2,
                         summary_step=0, **SMALL)
    student = build_framework(config).model
    inputs = {"rgb": np.ones((1, 32, 64, 3), "float32"), "depth": np.ones((1, 32, 64, 1),
                                                                          "float32")}
    outputs = student(inputs, training=False)
    assert outputs["feature_decoder"].shape == (1, 8, 16, 16)
    assert outputs["rep"].shape == (1, 8, 16, SMALL["rep_dim"])
    train(config)
    step, bank = _saved(config.checkpoint)
    assert step == 2 and bank["counts"].sum() > 0
    reader = tf.train.load_checkpoint(config.checkpoint)
    trained = {name for name in reader.get_variable_to_shape_map() if "rep_conv1" in name}
    assert trained                      # the representation head is in the checkpoint
    model = restore_eval_model(config)       # the teacher, without its representation head
    out = model(inputs, training=False)
    assert "rep" not in out and tuple(out["logits"].shape) == (1, 32, 64, 2)


def test_u2pl_trains_ssma_on_rgb_and_depth(tmp_path, records):
    config = tiny_config(tmp_path, records, {**TINY_ADAPNET, **TINIER, "model": "SSMA",
                                             "stage": "finetune"},
                         modalities=["rgb", "depth"], framework="u2pl",
                         unlabeled_data=records, max_iteration=2, summary_step=0, **SMALL)
    train(config)
    step, bank = _saved(config.checkpoint)
    assert step == 2 and bank["counts"].sum() > 0
    model = restore_eval_model(config)       # the teacher, without its representation head
    inputs = {"rgb": np.ones((1, 32, 64, 3), "float32"), "depth": np.ones((1, 32, 64, 1),
                                                                          "float32")}
    assert tuple(model(inputs, training=False)["logits"].shape) == (1, 32, 64, 2)
