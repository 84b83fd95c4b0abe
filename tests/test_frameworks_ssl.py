"""Semi-supervised engine: masking, CutMix, EMA, every SSL framework training a few steps."""

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.frameworks import common, cutmix, modality_dropout
from ssma_tf.training import checkpoints

SEED = tf.constant([3, 4], tf.int64)


def _inputs(batch=8, height=8, width=16):
    rng = np.random.default_rng(0)
    return {
        "rgb": tf.constant(rng.normal(size=(batch, height, width, 3)) + 5.0, tf.float32),
        "depth": tf.constant(rng.uniform(0.1, 1.0, (batch, height, width, 1)), tf.float32),
    }


# --- modality masking --------------------------------------------------------------------

def test_mask_zeroes_exactly_the_chosen_modality_in_range():
    inputs = _inputs()
    choice = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])  # 0: depth, 1: rgb (sorted), 2: none
    out = modality_dropout.mask_modalities(inputs, choice, row_range=(2, 7))
    names = sorted(inputs)
    for row in range(8):
        for index, name in enumerate(names):
            original, masked = inputs[name][row].numpy(), out[name][row].numpy()
            if 2 <= row < 7 and choice[row] == index:
                assert np.all(masked == 0.0) and not np.any(np.signbit(masked))
            else:
                np.testing.assert_array_equal(masked, original)


def test_random_mask_statistics_are_uniform_over_choices():
    inputs = _inputs(batch=3000, height=1, width=1)
    out = modality_dropout.random_modality_mask(inputs, SEED, row_range=(1000, 3000))
    rgb_zero = np.all(out["rgb"].numpy() == 0, axis=(1, 2, 3))
    depth_zero = np.all(out["depth"].numpy() == 0, axis=(1, 2, 3))
    assert not rgb_zero[:1000].any() and not depth_zero[:1000].any()
    assert not (rgb_zero & depth_zero).any()
    for fraction in (rgb_zero[1000:].mean(), depth_zero[1000:].mean()):
        assert abs(fraction - 1 / 3) < 0.05


def test_masking_is_identity_for_a_unimodal_input():
    inputs = {"rgb": _inputs()["rgb"]}
    out = modality_dropout.random_modality_mask(inputs, SEED)
    np.testing.assert_array_equal(out["rgb"].numpy(), inputs["rgb"].numpy())


def test_step_seed_differs_per_step_and_salt_and_is_reproducible():
    a = common.step_seed(0, 5, 1).numpy()
    np.testing.assert_array_equal(a, common.step_seed(0, 5, 1).numpy())
    assert not np.array_equal(a, common.step_seed(0, 6, 1).numpy())
    assert not np.array_equal(a, common.step_seed(0, 5, 2).numpy())
    salts = [common.SALT_MODDROP, common.SALT_STUDENT_MASK, common.SALT_TEACHER_MASK,
             common.SALT_CUTMIX]
    assert len(set(salts)) == len(salts)


# --- CutMix ------------------------------------------------------------------------------

def test_box_masks_are_binary_boxes_of_the_expected_area():
    masks = cutmix.box_masks(SEED, 256, 32, 64).numpy()
    assert masks.shape == (256, 32, 64)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    area = masks.mean(axis=(1, 2))
    # three boxes of U(0.25, 0.5)/3 each: union <= 0.5 (+ rounding), never empty
    assert area.max() <= 0.5 + 0.05 and area.min() > 0.0
    assert 0.15 < area.mean() < 0.4
    other = cutmix.box_masks(tf.constant([3, 5], tf.int64), 256, 32, 64).numpy()
    assert not np.array_equal(masks, other)


def test_single_box_is_a_rectangle():
    mask = cutmix.box_masks(SEED, 16, 32, 64, num_boxes=1).numpy()
    for m in mask:
        rows, cols = np.nonzero(m)
        box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert np.all(box == 1.0) and box.size == m.sum()


def test_cutmix_takes_partner_pixels_where_mask_is_one():
    images = _inputs(batch=4)["rgb"]
    labels = tf.reshape(tf.range(4), [4, 1, 1]) * tf.ones([4, 8, 16], tf.int32)
    mask = cutmix.box_masks(SEED, 4, 8, 16)
    mixed, mixed_labels = cutmix.cutmix(images, mask).numpy(), cutmix.cutmix(labels, mask).numpy()
    m = mask.numpy().astype(bool)
    for row in range(4):
        partner = (row - 1) % 4
        np.testing.assert_array_equal(mixed[row][m[row]], images.numpy()[partner][m[row]])
        np.testing.assert_array_equal(mixed[row][~m[row]], images.numpy()[row][~m[row]])
        np.testing.assert_array_equal(mixed_labels[row], np.where(m[row], partner, row))


def test_pseudo_labels_below_the_threshold_become_ignore():
    from ssma_tf.frameworks.losses import hard_pseudo_labels
    # top probabilities: 0.98 (class 2), 0.6 (class 0), 0.5 (class 1)
    probs = np.array([[[[0.01, 0.01, 0.98], [0.6, 0.3, 0.1], [0.25, 0.5, 0.25]]]], np.float32)
    logits = tf.math.log(tf.constant(probs))
    inputs = {"rgb": tf.ones([1, 1, 3, 3])}   # no padding
    np.testing.assert_array_equal(hard_pseudo_labels(logits, inputs).numpy(), [[[2, 0, 1]]])
    np.testing.assert_array_equal(
        hard_pseudo_labels(logits, inputs, threshold=0.55, ignore_label=255).numpy(),
        [[[2, 0, 255]]])
    np.testing.assert_array_equal(
        hard_pseudo_labels(logits, inputs, threshold=0.9, ignore_label=7).numpy(), [[[2, 7, 7]]])


def test_class_ratio_keeps_the_top_fraction_of_every_predicted_class():
    from ssma_tf.frameworks.losses import hard_pseudo_labels
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 10, 4)).astype(np.float32) * 3.0
    logits[..., 3] -= 4.0                     # class 3: rare and never confident
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    inputs = {"rgb": tf.ones([2, 6, 10, 3])}
    balanced = hard_pseudo_labels(tf.constant(logits), inputs, class_ratio=0.5).numpy()
    for c in range(4):
        conf_c = np.sort(confidence[predicted == c])[::-1]
        kept = int(len(conf_c) * 0.5)
        expected = predicted == c if kept == 0 else (
            (predicted == c) & (confidence >= conf_c[kept - 1]))
        np.testing.assert_array_equal(balanced == c, expected)
    assert 0 < np.sum(balanced == 3) < np.sum(predicted == 3)
    # With a threshold, a pixel is kept when it passes either rule: class 0 keeps its top
    # third (0.98) by ratio and 0.95 by threshold, class 1 its top half (0.5) by ratio only.
    probs = np.array([[[[0.98, 0.01, 0.01], [0.95, 0.04, 0.01], [0.6, 0.3, 0.1],
                        [0.25, 0.5, 0.25], [0.3, 0.45, 0.25]]]], np.float32)
    both = hard_pseudo_labels(tf.math.log(tf.constant(probs)), {"rgb": tf.ones([1, 1, 5, 3])},
                              threshold=0.9, class_ratio=0.5)
    np.testing.assert_array_equal(both.numpy(), [[[0, 0, 255, 1, 255]]])


def test_crop_padding_gets_no_pseudo_label():
    from ssma_tf.frameworks.losses import hard_pseudo_labels
    inputs = {m: v.numpy() for m, v in _inputs(batch=2).items()}
    for value in inputs.values():
        value[0, :3] = 0.0                    # padding rows: zero in every modality
    inputs["depth"][1, :, :5] = 0.0           # a depth hole alone is not padding
    logits = tf.one_hot(tf.fill([2, 8, 16], 3), 5)
    labels = hard_pseudo_labels(logits, {m: tf.constant(v) for m, v in inputs.items()},
                                ignore_label=255).numpy()
    assert np.all(labels[0, :3] == 255) and np.all(labels[0, 3:] == 3)
    assert np.all(labels[1] == 3)


# --- frameworks --------------------------------------------------------------------------

from framework_testing import NUM_CLASSES, H, L, U, W, batches  # noqa: E402
from ssma_tf.config import config_from_dict  # noqa: E402
from ssma_tf.frameworks import get_framework  # noqa: E402
from ssma_tf.frameworks.build import build_framework  # noqa: E402
from ssma_tf.frameworks.common import sigmoid_rampup  # noqa: E402
from ssma_tf.frameworks.mean_teacher import ema_decay  # noqa: E402
from ssma_tf.frameworks.pseudo_balance import PriorBalance  # noqa: E402
from ssma_tf.registry import FRAMEWORKS  # noqa: E402

SSL = ["supervised_moddrop", "mean_teacher", "mean_teacher_moddrop", "cps", "m3l"]


def adapnet_builder():
    from ssma_tf.models.adapnet_pp import build_adapnet_pp
    return build_adapnet_pp(NUM_CLASSES, "rgb", 3, width=0.0625, units=(1, 1, 1, 1),
                            easpp_rates=(1, 2, 3))


def fusion_builder():
    from ssma_tf.models.linear_fusion import build_linear_fusion
    return build_linear_fusion(NUM_CLASSES, {"rgb": 3, "depth": 1}, variant="tiny",
                               decoder_dim=8)


def inline_fusion_builder(features=()):
    """A few-layer RGB-D model: fast to build and to trace (framework mechanics tests).
    Its layers are named, so every build has the same variable paths (as real models).
    Synchronised BN, as the trainer's default, keeps moving statistics equal on replicas.
    `features` ("decoder": the last hidden map) as the model factory adds them."""
    import keras
    inputs = {"rgb": keras.Input((None, None, 3), name="rgb"),
              "depth": keras.Input((None, None, 1), name="depth")}
    x = keras.layers.Concatenate()([keras.layers.Conv2D(4, 3, padding="same",
                                                        name=f"{m}_conv")(inputs[m])
                                    for m in ("rgb", "depth")])
    x = keras.layers.BatchNormalization(synchronized=True, name="bn")(x)
    x = keras.layers.Dropout(0.1)(keras.layers.ReLU()(x))
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="logits")(x)
    aux = keras.layers.Conv2D(NUM_CLASSES, 1, name="aux")(x)
    outputs = {"logits": logits, "aux": aux}
    if "decoder" in features:
        outputs["feature_decoder"] = x
    model = keras.Model(inputs, outputs)
    model.output_loss_weights = {"logits": 1.0, "aux": 0.5}
    return model


BUILDERS = {"adapnet_pp": (adapnet_builder, ["rgb"]),
            "linearfusion": (fusion_builder, ["depth", "rgb"]),
            "inline": (inline_fusion_builder, ["depth", "rgb"])}


def make_config(framework, model="inline", **overrides):
    return config_from_dict({
        "framework": framework, "num_classes": NUM_CLASSES, "batch_size": L,
        "unlabeled_batch_size": U, "height": H, "width": W, "learning_rate": 1e-3,
        "max_iteration": 50, "modalities": BUILDERS[model][1],
        "model": "linearfusion" if model == "inline" else model, **overrides})


def make(framework, model="inline", **overrides):
    return build_framework(make_config(framework, model, **overrides),
                           model_builder=BUILDERS[model][0])



def run_steps(fw, count, data, graph=False):
    """Eager by default: tracing these models costs far more than a few eager steps."""
    step = tf.function(fw.train_step) if graph else fw.train_step
    logs = []
    for _ in range(count):
        logs.append({k: float(v) for k, v in step(*data).items()})
        fw.step.assign_add(1)
    return logs


@pytest.mark.parametrize("model", ["adapnet_pp", "linearfusion"])
@pytest.mark.parametrize("framework", SSL)
def test_every_framework_trains_with_finite_logged_losses(framework, model):
    fw = make(framework, model)
    data = batches(BUILDERS[model][1])
    logs = run_steps(fw, 1, data)
    for values in logs:
        assert all(np.isfinite(v) for v in values.values()), values
        assert "loss" in values and "learning_rate" in values
    if framework == "cps":
        assert {"cps_loss", "supervised_loss2"} <= set(logs[0])
    elif framework != "supervised_moddrop":
        assert {"consistency_loss", "supervised_loss"} <= set(logs[0])
    outputs = fw.eval_model(data[0][0], training=False)
    assert outputs["logits"].shape == (L, H, W, NUM_CLASSES)


@pytest.mark.parametrize("framework", ["mean_teacher", "cps"])
def test_frameworks_leave_unconfident_pixels_out_of_the_pseudo_labels(framework):
    fw = make(framework, teacher_train_mode=False)
    (inputs_l, _), inputs_u = batches(["depth", "rgb"])
    labeler = fw.teacher if framework == "mean_teacher" else fw.model
    logits = labeler(inputs_u, training=False)["logits"].numpy()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    confidence = (probs / probs.sum(-1, keepdims=True)).max(-1)
    fw.config = fw.config.replace(pseudo_threshold=float(np.median(confidence)))
    if framework == "mean_teacher":
        labels = fw._teacher_targets(inputs_u, 0, 0).numpy()
    else:
        labels = fw._pseudo_labels(fw.model(inputs_u, training=False), inputs_u, "model",
                                   0).numpy()
    expected = np.where(confidence >= np.median(confidence), logits.argmax(-1), 255)
    np.testing.assert_array_equal(labels, expected)
    assert 0.3 < np.mean(labels == 255) < 0.7


@pytest.mark.parametrize("framework", ["mean_teacher", "cps"])
def test_cutmix_option_trains(framework):
    soft = {"consistency": "softmax_mse", "consistency_weight": 100.0}   # mean teacher's keys
    fw = make(framework, cutmix=True, **(soft if framework == "mean_teacher" else {}))
    logs = run_steps(fw, 2, batches(["depth", "rgb"]), graph=True)
    assert all(np.isfinite(v) for values in logs for v in values.values())


def test_mean_teacher_learns_a_fixed_batch():
    fw = make("mean_teacher", learning_rate=1e-2)
    logs = run_steps(fw, 8, batches(["depth", "rgb"]))
    assert logs[-1]["supervised_loss"] < logs[0]["supervised_loss"]


def test_teacher_after_one_update_is_the_ema_of_weights_and_a_copy_of_statistics():
    fw = make("mean_teacher", teacher_train_mode=False, ema_decay=0.9)
    rng = np.random.default_rng(1)
    fw.teacher.set_weights([w + rng.normal(size=w.shape).astype(w.dtype)
                            for w in fw.teacher.get_weights()])
    teacher_before = [w.copy() for w in fw.teacher.get_weights()]
    fw.step.assign(4)
    run_steps(fw, 1, batches(["depth", "rgb"]))
    decay = min(1 - 1 / 5, 0.9)
    trainable = {v.path for v in fw.teacher.trainable_weights}
    assert len(trainable) < len(fw.teacher.weights)          # BN moving statistics too
    for var, before, student in zip(fw.teacher.weights, teacher_before, fw.model.get_weights()):
        expected = decay * before + (1 - decay) * student if var.path in trainable else student
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ema_decay_and_rampup_schedules():
    assert float(ema_decay(0, 0.99)) == 0.0
    assert float(ema_decay(1, 0.99)) == pytest.approx(0.5)
    assert float(ema_decay(10_000, 0.99)) == pytest.approx(0.99)
    assert float(sigmoid_rampup(123, 0)) == 1.0
    assert float(sigmoid_rampup(0, 100)) == pytest.approx(np.exp(-5.0))
    assert float(sigmoid_rampup(50, 100)) == pytest.approx(np.exp(-1.25))
    assert float(sigmoid_rampup(200, 100)) == 1.0


def test_sup_only_steps_train_on_labels_then_the_teacher_starts_from_the_student():
    fw = make("mean_teacher", sup_only_steps=2, rampup_steps=10)
    data = batches(["depth", "rgb"])
    teacher_before = [w.numpy() for w in fw.teacher.weights]
    student_before = [w.numpy() for w in fw.model.trainable_weights]
    for _ in range(2):
        logs = fw.supervised_only_step(data[0])
        fw.step.assign_add(1)
    assert set(logs) == {"loss", "learning_rate"}
    for before, after in zip(teacher_before, fw.teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert any(not np.allclose(b, a.numpy())
               for b, a in zip(student_before, fw.model.trainable_weights))
    logs = run_steps(fw, 1, data)[0]
    assert logs["consistency_weight"] == pytest.approx(np.exp(-5.0))   # ramp-up from step 2
    for teacher, student in zip(fw.teacher.weights, fw.model.weights):  # decay 0: a copy
        np.testing.assert_allclose(teacher.numpy(), student.numpy(), rtol=1e-6)


def test_cps_supervised_only_step_trains_both_networks():
    fw = make("cps")
    before = [[w.numpy() for w in m.trainable_weights] for m in (fw.model, fw.model2)]
    fw.supervised_only_step(batches(["depth", "rgb"])[0])
    for weights, model in zip(before, (fw.model, fw.model2)):
        assert any(not np.allclose(b, a.numpy()) for b, a in zip(weights, model.trainable_weights))


def test_m3l_student_batch_duplicates_labeled_rows_and_masks_only_the_range():
    fw = make("m3l")
    (inputs_l, labels), inputs_u = batches(["depth", "rgb"])
    fw.step.assign(7)
    student, sup_labels, targets = fw.prepare_batches(inputs_l, labels, inputs_u)
    np.testing.assert_array_equal(sup_labels.numpy(), np.concatenate([labels.numpy()] * 2))
    assert targets.shape == (2 * L + U, H, W) and targets.dtype == tf.int32
    full = {m: np.concatenate([inputs_l[m].numpy()] * 2 + [inputs_u[m].numpy()])
            for m in inputs_l}
    for m in full:
        np.testing.assert_array_equal(student[m].numpy()[:L], full[m][:L])
    for row in range(L, 2 * L + U):
        zeroed = [m for m in full if np.all(student[m].numpy()[row] == 0)]
        assert len(zeroed) <= 1
        for m in full:
            if m not in zeroed:
                np.testing.assert_array_equal(student[m].numpy()[row], full[m][row])


def test_masked_teacher_only_in_mean_teacher_moddrop():
    assert get_framework("mean_teacher_moddrop").mask_teacher
    assert not get_framework("m3l").mask_teacher and get_framework("m3l").mask_student


@pytest.mark.parametrize("framework,extra,model", [
    ("m3l", "teacher", "inline"), ("cps", "model2", "inline"),
    ("mean_teacher", "teacher", "linearfusion")])  # MiT keeps its blocks in Python lists
def test_checkpoint_round_trip_restores_teacher_and_second_network(tmp_path, framework, extra,
                                                                   model):
    fw = make(framework, model)
    if model == "inline":
        run_steps(fw, 1, batches(["depth", "rgb"]))
    items = fw.checkpoint_items()
    assert extra in items and "model" in items
    path = tf.train.Checkpoint(**checkpoints.trackable(items)).save(str(tmp_path / "ckpt"))
    fresh = make(framework, model)
    assert any(not np.array_equal(a, b) for a, b in zip(
        getattr(fresh, extra).get_weights(), getattr(fw, extra).get_weights()))
    tf.train.Checkpoint(**checkpoints.trackable(fresh.checkpoint_items())).restore(
        path).assert_existing_objects_matched()
    for a, b in zip(getattr(fresh, extra).get_weights(), getattr(fw, extra).get_weights()):
        np.testing.assert_array_equal(a, b)
    assert fresh.eval_model is (fresh.teacher if extra == "teacher" else fresh.model)


PACKAGE_FRAMEWORKS = sorted(e.name for e in FRAMEWORKS if e.obj.__module__.startswith("ssma_tf."))


@pytest.mark.parametrize("framework", PACKAGE_FRAMEWORKS)
def test_eval_item_names_the_eval_model_among_the_checkpoint_items(framework):
    fw = make(framework)
    assert fw.checkpoint_items()[fw.eval_item] is fw.eval_model


def test_restore_eval_model_builds_the_teacher_alone_in_float32(tmp_path):
    import keras

    from ssma_tf.errors import ConfigError

    assert get_framework("m3l").eval_item == "teacher"
    assert get_framework("cps").eval_item == "model"
    fw = make("mean_teacher")
    run_steps(fw, 2, batches(["depth", "rgb"]))      # EMA decay 0 at step 0, then > 0
    assert any(not np.array_equal(a, b) for a, b in zip(fw.teacher.get_weights(),
                                                         fw.model.get_weights()))
    prefix = tf.train.Checkpoint(**checkpoints.trackable(fw.checkpoint_items())).save(
        str(tmp_path / "mt" / "ckpt"))
    built = []

    def build(config, channels):
        built.append(keras.config.dtype_policy().name)
        return inline_fusion_builder()

    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = checkpoints.restore_eval_model(fw.config, prefix, build)
        assert keras.config.dtype_policy().name == "mixed_float16"   # no global side effect
    finally:
        keras.config.set_dtype_policy("float32")
    assert built == ["float32"]                                       # one model, no framework
    for a, b in zip(model.get_weights(), fw.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert checkpoints.saved_models(prefix) == ["model", "teacher"]

    student_only = tf.train.Checkpoint(**checkpoints.trackable({"model": fw.model})).save(
        str(tmp_path / "sup" / "ckpt"))
    with pytest.raises(ConfigError, match=r"key 'checkpoint': .* holds no 'teacher' model \(the "
                                          r"eval model of framework mean_teacher.*holds model"):
        checkpoints.restore_eval_model(fw.config, student_only, build)
    with pytest.raises(ConfigError, match=r"checkpoint .* does not fit the linearfusion this "
                                          r"config builds: \d+ weights are not in the checkpoint"):
        checkpoints.restore_eval_model(fw.config.replace(framework="supervised"), prefix,
                                       lambda config, channels: fusion_builder())


def test_cps_networks_start_different():
    fw = make("cps")
    assert any(not np.array_equal(a, b) for a, b in zip(fw.model.get_weights(),
                                                         fw.model2.get_weights()))


@pytest.mark.slow
def test_m3l_under_mirrored_strategy_keeps_replicas_in_sync():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        fw = make("m3l", batch_size=2 * L, unlabeled_batch_size=2 * U, pseudo_balance="prior")
    data = batches(["depth", "rgb"])

    @tf.function
    def step():
        out = strategy.run(fw.train_step, args=data)
        return {k: strategy.reduce("SUM", v, axis=None) for k, v in out.items()}

    for _ in range(2):
        values = {k: float(v) for k, v in step().items()}
        fw.step.assign_add(1)
        assert all(np.isfinite(v) for v in values.values()), values
    for var in fw.teacher.weights:
        replicas = [v.numpy() for v in var.value.values]
        np.testing.assert_allclose(replicas[0], replicas[1], rtol=1e-5, atol=1e-6)
    balance = fw.pseudo_balance       # 2 steps x 2 replicas' labels counted; offsets in sync
    np.testing.assert_array_equal(balance.label_counts.numpy(),
                                  4 * np.bincount(data[0][1].numpy().ravel(), minlength=3))
    offsets = [v.numpy() for v in balance.offsets["/logits"].values]
    np.testing.assert_array_equal(offsets[0], offsets[1])
    assert np.any(offsets[0] != 0)


def test_teacher_takes_student_weights_loaded_after_build_at_step_zero():
    fw = make("mean_teacher", teacher_train_mode=False)
    rng = np.random.default_rng(2)
    loaded = [w + rng.normal(size=w.shape).astype(w.dtype) for w in fw.model.get_weights()]
    fw.model.set_weights(loaded)        # as the trainer's init_checkpoint does
    (inputs_l, labels), inputs_u = batches(["depth", "rgb"])
    fw.prepare_batches(inputs_l, labels, inputs_u)
    for teacher, student in zip(fw.teacher.get_weights(), loaded):
        np.testing.assert_array_equal(teacher, student)


@pytest.mark.parametrize("framework", ["mean_teacher", "m3l", "cps"])
@pytest.mark.parametrize("rows", ["all", "unlabeled"])
def test_pseudo_rows_picks_the_rows_trained_on_pseudo_labels(framework, rows):
    fw = make(framework, pseudo_rows=rows)
    pseudo_label_rows = []
    supervised_loss = fw.supervised_loss

    def recording_loss(labels, outputs, *, global_batch_size=None, ohem=True):
        if not ohem:                                   # the pseudo-label terms
            pseudo_label_rows.append((labels.shape[0], outputs["logits"].shape[0]))
        return supervised_loss(labels, outputs, global_batch_size=global_batch_size, ohem=ohem)
    fw.supervised_loss = recording_loss
    run_steps(fw, 1, batches(["depth", "rgb"]))
    labeled_rows = fw.labeled_copies * L if framework != "cps" else L
    expected = U if rows == "unlabeled" else labeled_rows + U
    assert pseudo_label_rows and all(r == (expected, expected) for r in pseudo_label_rows)


@pytest.mark.parametrize("framework", ["mean_teacher", "cps"])
def test_per_output_pseudo_targets_label_each_output_from_the_same_output(framework):
    fw = make(framework, teacher_train_mode=False, pseudo_targets="per_output")
    (_, _), inputs_u = batches(["depth", "rgb"])
    labeler = fw.teacher if framework == "mean_teacher" else fw.model
    outputs = labeler(inputs_u, training=False)
    if framework == "mean_teacher":
        targets = fw._teacher_targets(inputs_u, 0, 0)
    else:
        targets = fw._pseudo_labels(outputs, inputs_u, "model", 0)
    assert set(targets) == {"logits", "aux"}
    for name, labels in targets.items():
        np.testing.assert_array_equal(labels, np.argmax(outputs[name], -1))
    assert np.mean(targets["logits"].numpy() != targets["aux"].numpy()) > 0.1
    shared = make(framework, teacher_train_mode=False)
    assert not isinstance(shared._pseudo_labels(outputs, inputs_u, "model", 0)
                          if framework == "cps" else shared._teacher_targets(inputs_u, 0, 0),
                          dict)


@pytest.mark.parametrize("framework,extra", [("mean_teacher", {"consistency": "softmax_mse"}),
                                             ("m3l", {"pseudo_rows": "unlabeled"}),
                                             ("cps", {})])
def test_per_output_pseudo_targets_train_with_cutmix(framework, extra):
    fw = make(framework, pseudo_targets="per_output", cutmix=True, **extra)
    logs = run_steps(fw, 2, batches(["depth", "rgb"]), graph=True)
    assert all(np.isfinite(v) for values in logs for v in values.values())
    assert logs[0]["loss"] > 0


# --- class-balanced pseudo labels (pseudo_balance: prior) ---------------------------------

def test_prior_balance_moves_the_argmax_share_to_the_labeled_prior():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2, 255], [50, 30, 20, 28])[rng.permutation(128)].reshape(2, 4, 16)
    balance = PriorBalance(3, ["/logits"], ignore_label=255)
    balance.observe_labels(tf.constant(labels))
    np.testing.assert_allclose(balance.prior.numpy(), [0.5, 0.3, 0.2], rtol=1e-6)
    logits = rng.normal(size=(6, 16, 32, 3)) + [2.0, 0.0, 0.0]      # mostly class 0
    logits[:2] = [0.0, 0.0, 50.0]         # labeled rows (before first_unlabeled): not counted
    logits[2:, :4] = [0.0, 50.0, 0.0]     # crop padding (zero inputs): not counted
    inputs = {"rgb": np.ones((6, 16, 32, 3), np.float32)}
    inputs["rgb"][2:, :4] = 0.0
    logits, inputs = tf.constant(logits, tf.float32), {"rgb": tf.constant(inputs["rgb"])}
    adjust = tf.function(balance.adjust)
    for _ in range(300):
        used = balance.offsets["/logits"].numpy()
        adjusted = adjust("/logits", logits, inputs, 2).numpy()
    np.testing.assert_allclose(adjusted, logits.numpy() + used, rtol=1e-6, atol=1e-5)
    offsets = balance.offsets["/logits"].numpy()
    unlabeled = (logits.numpy() + offsets)[2:, 4:].argmax(-1)
    share = np.bincount(unlabeled.ravel(), minlength=3) / unlabeled.size
    np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.03)


@pytest.mark.parametrize("framework", ["mean_teacher", "cps"])
def test_pseudo_balance_offsets_shift_the_pseudo_labels(framework):
    fw = make(framework, teacher_train_mode=False, pseudo_balance="prior")
    assert fw.checkpoint_items()["pseudo_balance"] is fw.pseudo_balance
    (_, labels), inputs_u = batches(["depth", "rgb"])
    fw.count_labels(labels)
    labeler = "" if framework == "mean_teacher" else "model"
    fw.pseudo_balance.offsets[labeler + "/logits"].assign([0.0, 0.0, 100.0])
    if framework == "mean_teacher":
        targets = fw._teacher_targets(inputs_u, 0, 0).numpy()
    else:
        targets = fw._pseudo_labels(fw.model(inputs_u, training=False), inputs_u, "model",
                                    0).numpy()
    assert np.all(targets == 2)
    assert fw.pseudo_balance.offsets[labeler + "/logits"].numpy()[2] < 100.0  # it moved back
    assert make(framework).pseudo_balance is None and "pseudo_balance" not in make(
        framework).checkpoint_items()


@pytest.mark.parametrize("framework", ["m3l", "cps"])
def test_pseudo_balance_trains_per_output_with_cutmix_and_round_trips(tmp_path, framework):
    fw = make(framework, pseudo_balance="prior", pseudo_targets="per_output", cutmix=True)
    data = batches(["depth", "rgb"])
    logs = run_steps(fw, 2, data, graph=True)
    assert all(np.isfinite(v) for values in logs for v in values.values())
    np.testing.assert_array_equal(      # each step's labels once (M3L's copy is not counted)
        fw.pseudo_balance.label_counts.numpy(),
        2 * np.bincount(data[0][1].numpy().ravel(), minlength=NUM_CLASSES))
    labelers = ["model", "model2"] if framework == "cps" else [""]
    assert set(fw.pseudo_balance.offsets) == {f"{a}/{b}" for a in labelers
                                              for b in ("logits", "aux")}
    assert all(np.any(v.numpy() != 0) for v in fw.pseudo_balance.offsets.values())
    path = tf.train.Checkpoint(**checkpoints.trackable(fw.checkpoint_items())).save(
        str(tmp_path / "ckpt"))
    fresh = make(framework, pseudo_balance="prior", pseudo_targets="per_output")
    tf.train.Checkpoint(**checkpoints.trackable(fresh.checkpoint_items())).restore(
        path).assert_existing_objects_matched()
    for key, value in fw.pseudo_balance.offsets.items():
        np.testing.assert_array_equal(fresh.pseudo_balance.offsets[key].numpy(), value.numpy())


# --- seams for coming frameworks: features, hooks, image-level outputs ---------------------

def feature_builder(calls):
    """inline_fusion_builder that honours `features=("decoder",)` as the model registry
    will: the outputs then also hold `feature_decoder` (here [B, H/2, W/2, 8])."""
    import keras

    def build(features=()):
        calls.append(tuple(features))
        base = inline_fusion_builder()
        if not features:
            return base
        assert tuple(features) == ("decoder",)
        hidden = base.get_layer("logits").input
        pooled = keras.layers.AveragePooling2D(2, name="feature_decoder")(hidden)
        model = keras.Model(base.inputs, {**base.output, "feature_decoder": pooled})
        model.output_loss_weights = base.output_loss_weights
        return model
    return build


def test_a_mean_teacher_subclass_adds_a_loss_on_features_through_the_hooks():
    from ssma_tf.frameworks.mean_teacher import MeanTeacher

    class FeatureConsistency(MeanTeacher):     # U2PL's shape: features and an extra term
        model_features = ("decoder",)

        def teacher_forward(self, batch):
            self.teacher_rows = num_rows_of(batch)
            return super().teacher_forward(batch)

        def extra_losses(self, student_outputs, teacher_outputs, rows):
            student, teacher = student_outputs["feature_decoder"], teacher_outputs[
                "feature_decoder"]
            assert student.shape == teacher.shape == (L + U, H // 2, W // 2, 8)
            assert rows.supervised == L and rows.labels.shape == (L, H, W)
            assert rows.targets.shape == (L + U, H, W)
            per_image = tf.reduce_mean(tf.square(student - tf.stop_gradient(teacher)),
                                       axis=[1, 2, 3])
            return {"feature_loss": tf.reduce_sum(per_image) / rows.global_all}

    calls = []
    fw = build_framework(make_config("mean_teacher"), model_builder=feature_builder(calls),
                         framework_class=FeatureConsistency)
    assert calls == [("decoder",), ("decoder",)]           # student and teacher
    fw.step.assign(3)
    fw.teacher.set_weights([w + 0.1 for w in fw.teacher.get_weights()])
    logs = run_steps(fw, 1, batches(["depth", "rgb"]))[0]
    assert fw.teacher_rows == L + U and logs["feature_loss"] > 0
    assert logs["loss"] == pytest.approx(logs["supervised_loss"] + logs["consistency_weight"]
                                         * logs["consistency_loss"] + logs["feature_loss"],
                                         rel=1e-5)
    assert fw.log_reduction("feature_loss") == tf.distribute.ReduceOp.SUM
    plain = make("mean_teacher")                            # no features asked, no extra term
    assert set(run_steps(plain, 1, batches(["depth", "rgb"]))[0]) == {
        "loss", "supervised_loss", "consistency_loss", "consistency_weight", "learning_rate"}


def num_rows_of(batch):
    return next(iter(batch.values())).shape[0]


def test_default_model_builder_passes_the_options_to_the_model_factory(monkeypatch):
    from ssma_tf.frameworks import build as framework_build
    seen = []
    monkeypatch.setattr(framework_build, "build_model",
                        lambda config, channels, **options: seen.append((channels, options)))
    builder = framework_build.default_model_builder(make_config("cps"), {"rgb": 3})
    builder()
    builder(features=("decoder",))
    assert seen == [({"rgb": 3}, {}), ({"rgb": 3}, {"features": ("decoder",)})]


def classifier_builder():
    """inline_fusion_builder plus an image-level head "cls" [B, C] trained by multi-label
    BCE (MLMT's classifier branch)."""
    import keras
    base = inline_fusion_builder()
    hidden = keras.layers.GlobalAveragePooling2D()(base.get_layer("logits").input)
    cls = keras.layers.Dense(NUM_CLASSES, name="cls")(hidden)
    model = keras.Model(base.inputs, {**base.output, "cls": cls})
    model.output_loss_weights = {"logits": 1.0, "aux": 0.5, "cls": 0.4}
    model.output_loss_kinds = {"cls": "multilabel_bce"}
    return model


@pytest.mark.parametrize("framework,extra", [
    ("mean_teacher", {"pseudo_targets": "per_output"}),
    ("mean_teacher", {"consistency": "softmax_mse"}),
    ("cps", {})])
def test_an_image_level_output_trains_beside_the_pixel_outputs(framework, extra):
    from ssma_tf.frameworks.losses import image_bce_loss, present_classes
    fw = build_framework(make_config(framework, **extra), model_builder=classifier_builder)
    assert fw.pixel_loss_weights == {"logits": 1.0, "aux": 0.5}
    assert "cls" not in fw.pseudo_output_names()
    (inputs_l, labels), _ = data = batches(["depth", "rgb"])
    head = fw.model.get_layer("cls").kernel.numpy()
    logs = run_steps(fw, 1, data)[0]
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert not np.allclose(head, fw.model.get_layer("cls").kernel.numpy())
    outputs = fw.model(inputs_l, training=False)
    pixel_only = fw.supervised_loss(labels, {k: v for k, v in outputs.items() if k != "cls"}
                                    | {"cls": tf.zeros([L, NUM_CLASSES])})
    bce_of_zeros = np.log(2.0)      # logit 0: log 2 per class, whatever the target
    expected = float(pixel_only) - 0.4 * bce_of_zeros + 0.4 * float(image_bce_loss(
        present_classes(labels, NUM_CLASSES), outputs["cls"], global_batch_size=L))
    assert float(fw.supervised_loss(labels, outputs)) == pytest.approx(expected, rel=1e-5)
