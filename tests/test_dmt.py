"""DMT: dynamic mutual weights and class-balanced selection against hand-computed numbers;
the `dmt` framework's rounds (index, ratio, labeller re-freeze and optimizer restart from the
step), its train step, exact resume inside a round, multi-round trainer runs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.frameworks import dmt_loss
from ssma_tf.frameworks.losses import segmentation_loss

# 1x2x2, two classes. Pixel: (p, pseudo label y, other model's confidence q)
#   A ([0.8, 0.2], 0, 0.6): agree                    -> 0.8 ** g1
#   B ([0.7, 0.3], 1, 0.6): disagree, m=0.7 > q      -> 0
#   C ([0.6, 0.4], 1, 0.9): disagree, m=0.6 <= q     -> 0.4 ** g2
#   D ([0.55, 0.45], 1, 0.55): disagree, tie m == q  -> 0.45 ** g2 (the code's m > q test)
PROBS = np.array([[[[0.8, 0.2], [0.7, 0.3]], [[0.6, 0.4], [0.55, 0.45]]]], np.float32)
PSEUDO = np.array([[[0, 1], [1, 1]]], np.int32)
CONF = np.array([[[0.6, 0.6], [0.9, 0.55]]], np.float32)


def test_dynamic_weights_each_case():
    weights = dmt_loss.dynamic_mutual_weights(PROBS, PSEUDO, CONF, gamma1=2.0, gamma2=3.0)
    np.testing.assert_allclose(weights.numpy(), [[[0.64, 0.0], [0.064, 0.091125]]], rtol=1e-5)


def test_dynamic_weights_gamma_zero_is_one_or_zero():
    weights = dmt_loss.dynamic_mutual_weights(PROBS, PSEUDO, CONF, gamma1=0.0, gamma2=0.0)
    np.testing.assert_allclose(weights.numpy(), [[[1.0, 0.0], [1.0, 1.0]]])


def test_dynamic_loss_through_pixel_weights():
    """D ignored: sum(w * -log p[y]) over A, B, C / 3 valid pixels
    = (0.64 * -ln 0.8 + 0 + 0.064 * -ln 0.4) / 3 = 0.0671515."""
    pseudo = np.array([[[0, 1], [1, 255]]], np.int32)
    weights = dmt_loss.dynamic_mutual_weights(PROBS, pseudo, CONF, gamma1=2.0, gamma2=3.0)
    loss = segmentation_loss(pseudo, np.log(PROBS), num_classes=2, global_batch_size=1,
                             pixel_weights=weights)
    expected = (0.64 * -math.log(0.8) + 0.064 * -math.log(0.4)) / 3
    assert expected == pytest.approx(0.0671515, abs=1e-6)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# Class 0: confidences 0.9, 0.8, 0.8 (a tie), 0.6, 0.5; class 1: 0.95, 0.7, 0.4, 0.3;
# class 2: no pixel.
LABELS = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1]], np.int32)
SCORES = np.array([[0.9, 0.8, 0.8, 0.6, 0.5, 0.95, 0.7, 0.4, 0.3]], np.float32)
E = dmt_loss.EMPTY_THRESHOLD
CASES = [
    # r = 0.4, code: class 0 int(2.0)=2 -> sorted[-3] = 0.8 (3 kept, the tie included);
    # class 1 int(1.6)=1 -> sorted[-2] = 0.7; class 2 empty -> 1e-5.
    (0.4, "code", [0.8, 0.7, E], [0, 0, 0, 255, 255, 1, 1, 255, 255]),
    # r = 0.4, paper: top 2 of class 0 -> 0.8 (the tie keeps a third); top 1 of class 1.
    (0.4, "paper", [0.8, 0.95, 0.0], [0, 0, 0, 255, 255, 1, 255, 255, 255]),
    # r = 0.2, code: class 0 int(1.0)=1 -> sorted[-2] = 0.8; class 1 int(0.8)=0 -> 1e-5.
    (0.2, "code", [0.8, E, E], [0, 0, 0, 255, 255, 1, 1, 1, 1]),
    (0.2, "paper", [0.9, 0.0, 0.0], [0, 255, 255, 255, 255, 1, 1, 1, 1]),
    # r = 1: the minimum, every pixel kept.
    (1.0, "code", [0.5, 0.3, E], [0, 0, 0, 0, 0, 1, 1, 1, 1]),
    (1.0, "paper", [0.5, 0.3, E], [0, 0, 0, 0, 0, 1, 1, 1, 1]),
]


@pytest.mark.parametrize("ratio,rule,thresholds,selected", CASES)
def test_class_balanced_selection(ratio, rule, thresholds, selected):
    found = dmt_loss.class_thresholds(LABELS, SCORES, 3, ratio, subsample=1, rule=rule)
    np.testing.assert_allclose(found, thresholds, rtol=1e-6)
    labels = dmt_loss.select_pseudo_labels(LABELS, SCORES, found)
    np.testing.assert_array_equal(labels, [selected])
    found_tf = dmt_loss.class_thresholds_tf(LABELS, SCORES, 3, ratio, subsample=1, rule=rule)
    np.testing.assert_allclose(found_tf.numpy(), thresholds, rtol=1e-6)
    labels_tf = dmt_loss.select_pseudo_labels_tf(LABELS, SCORES, found_tf)
    np.testing.assert_array_equal(labels_tf.numpy(), [selected])


def test_selection_subsamples_every_kth_pixel():
    """subsample=2 uses pixels 0, 2, 4, 6, 8: class 0 {0.9, 0.8, 0.5}, class 1 {0.7, 0.3};
    r = 0.5, code: class 0 int(1.5)=1 -> sorted[-2] = 0.8; class 1 int(1.0)=1 -> 0.3."""
    found = dmt_loss.class_thresholds(LABELS, SCORES, 3, 0.5, subsample=2)
    np.testing.assert_allclose(found, [0.8, 0.3, E], rtol=1e-6)
    found_tf = dmt_loss.class_thresholds_tf(LABELS, SCORES, 3, 0.5, subsample=2)
    np.testing.assert_allclose(found_tf.numpy(), [0.8, 0.3, E], rtol=1e-6)


def test_selection_keeps_ignored_and_rejects_unknown_rule():
    labels = np.array([255, 0], np.int32)
    out = dmt_loss.select_pseudo_labels(labels, np.array([0.0, 0.1]), [0.5, 0.5])
    np.testing.assert_array_equal(out, [255, 255])
    with pytest.raises(ValueError):
        dmt_loss.class_thresholds(labels, labels, 2, 0.5, rule="other")


# --- the framework -------------------------------------------------------------------------

from test_frameworks_ssl import batches, make, make_config, run_steps  # noqa: E402

from ssma_tf.config import config_from_dict  # noqa: E402
from ssma_tf.errors import ConfigError  # noqa: E402
from ssma_tf.frameworks import dmt  # noqa: E402
from ssma_tf.frameworks.build import build_framework  # noqa: E402
from ssma_tf.training import checkpoints  # noqa: E402
from ssma_tf.training.checkpoints import restore_eval_model  # noqa: E402
from ssma_tf.training.trainer import train  # noqa: E402
from trainer_data import tiny_config, write_records  # noqa: E402

OTHER_CHOICES = {"dmt_selection": "paper", "dmt_normalize": "separate",
                 "dmt_labeler_train_mode": True, "dmt_ratios": [1.0]}


def test_round_index_and_start_come_from_the_step():
    # 2 rounds of 3 steps: semi-supervised steps 0-2 round 0, 3 and on round 1
    steps = [-1, 0, 1, 2, 3, 5, 6, 9]
    assert [int(dmt.round_index(s, 3, 2)) for s in steps] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [bool(dmt.round_starts(s, 3, 2)) for s in steps] == [
        False, True, False, False, True, False, False, False]


def test_round_length_splits_the_semi_supervised_steps_and_checks_the_ratios():
    def config(**keys):
        return config_from_dict({"framework": "dmt", "model": "linearfusion",
                                 "num_classes": 3, **keys}, "run.config")
    assert dmt.round_length(config(max_iteration=12, sup_only_steps=2)) == 2     # 10 // 5
    assert dmt.round_length(config(max_iteration=12, dmt_round_steps=7)) == 7
    with pytest.raises(ConfigError, match="5 DMT rounds need at least 5 steps"):
        dmt.round_length(config(max_iteration=6, sup_only_steps=2))
    with pytest.raises(ConfigError, match=r"run.config: key 'dmt_ratios'"):
        dmt.round_length(config(max_iteration=12, dmt_ratios=[0.5, 1.5]))


@pytest.mark.parametrize("labeler,keys", [("frozen", {"dmt_ratios": [0.5]}),
                                          ("live", OTHER_CHOICES)])
def test_dmt_graph_step_trains_both_networks(labeler, keys):
    fw = make("dmt", dmt_labeler=labeler, dmt_subsample=1, **keys)
    data = batches(["depth", "rgb"])
    before = [[w.numpy() for w in m.trainable_weights] for m in (fw.model, fw.model2)]
    logs = run_steps(fw, 2, data, graph=True)[0]
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert {"loss", "supervised_loss", "supervised_loss2", "mutual_loss", "mutual_loss2",
            "pseudo_kept", "mean_weight", "learning_rate", "dmt_round", "dmt_ratio"} <= set(logs)
    if keys["dmt_ratios"][0] < 1:
        assert 0.0 < logs["pseudo_kept"] < 1.0 and 0.0 < logs["pseudo_kept2"] < 1.0
    else:                         # r = 1 keeps every pixel (no padding in these inputs)
        assert logs["pseudo_kept"] == logs["pseudo_kept2"] == 1.0
    assert 0.0 < logs["mean_weight"] <= 1.0
    assert logs["mutual_loss"] > 0.0 and logs["mutual_loss2"] > 0.0
    for weights, model in zip(before, (fw.model, fw.model2)):
        assert any(not np.allclose(b, a.numpy()) for b, a in zip(weights, model.trainable_weights))
    if labeler == "frozen":      # after two steps the labellers still hold the start weights
        for frozen, start in zip(fw.labeler1.trainable_weights, before[0]):
            np.testing.assert_array_equal(frozen.numpy(), start)
        assert {"labeler1", "labeler2", "model2", "round_optimizer_decoder",
                "round_optimizer2_decoder"} <= set(fw.checkpoint_items())
    else:
        assert "labeler1" not in fw.checkpoint_items()
    for name in ("supervised_loss2", "mutual_loss2", "pseudo_kept", "mean_weight", "dmt_round"):
        assert name in fw.log_reductions


def test_dmt_pseudo_labels_are_the_class_balanced_selection_at_the_rounds_ratio():
    fw = make("dmt", dmt_ratios=[0.5, 0.25], dmt_round_steps=2, dmt_subsample=1)
    inputs = batches(["depth", "rgb"])[1]
    probs = tf.nn.softmax(fw.model(inputs, training=False)["logits"]).numpy()
    for step, ratio in ((1, 0.5), (2, 0.25), (40, 0.25)):      # the last round runs on
        fw.step.assign(step)
        assert float(fw.ratio) == ratio
        labels, confidence = fw.pseudo_labels(fw.model, inputs)
        expected = dmt_loss.select_pseudo_labels(
            probs.argmax(-1), probs.max(-1),
            dmt_loss.class_thresholds(probs.argmax(-1), probs.max(-1), 3, ratio, subsample=1))
        np.testing.assert_array_equal(labels.numpy(), expected)
        np.testing.assert_allclose(confidence.numpy(), probs.max(-1), rtol=1e-5)


def _plain_builder():
    """Conv-BN-ReLU-conv without dropout: two frameworks with equal weights compute equal
    losses."""
    import keras
    inputs = {m: keras.Input((None, None, c), name=m) for m, c in (("rgb", 3), ("depth", 1))}
    x = keras.layers.Concatenate()([inputs["rgb"], inputs["depth"]])
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3,
                                                                                  padding="same")(x)))
    return keras.Model(inputs, {"logits": keras.layers.Conv2D(3, 1)(x)})


ROUNDS = {"sup_only_steps": 1, "dmt_ratios": [0.5, 1.0], "dmt_round_steps": 2,
          "dmt_subsample": 1, "max_iteration": 5, "dmt_learning_rate": 2e-3}


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def test_each_round_refreezes_the_labellers_and_restarts_the_round_optimizers():
    fw = build_framework(make_config("dmt", **ROUNDS), model_builder=_plain_builder)
    data = batches(["depth", "rgb"])
    fw.supervised_only_step(data[0])                  # stage 0 (step 1)
    fw.step.assign(1)
    stage0 = [_weights(fw.model), _weights(fw.model2)]
    assert not np.allclose(stage0[0][0], _weights(fw.labeler1)[0])
    step = tf.function(fw.train_step)
    logs = []
    for index in range(4):                            # steps 2-5: rounds 0, 0, 1, 1
        if index == 2:
            round_end = [_weights(fw.model), _weights(fw.model2)]
        logs.append({k: float(v) for k, v in step(*data).items()})
        fw.step.assign_add(1)
        if index == 0:                                # round 0 froze the stage-0 networks
            for labeler, start in zip((fw.labeler1, fw.labeler2), stage0):
                for a, b in zip(_weights(labeler), start):
                    np.testing.assert_array_equal(a, b)
    assert [log["dmt_round"] for log in logs] == [0, 0, 1, 1]
    assert [log["dmt_ratio"] for log in logs] == [0.5, 0.5, 1.0, 1.0]
    assert logs[2]["pseudo_kept"] == 1.0 and logs[0]["pseudo_kept"] < 1.0
    for labeler, end in zip((fw.labeler1, fw.labeler2), round_end):   # round 1's labellers
        for a, b in zip(_weights(labeler), end):
            np.testing.assert_array_equal(a, b)
    # poly 0.9 over 2 steps, restarted: after 1 and 2 steps of each round
    lrs = [2e-3 * 0.5 ** 0.9, 0.0, 2e-3 * 0.5 ** 0.9, 0.0]
    assert [log["learning_rate"] for log in logs] == pytest.approx(lrs, abs=1e-9)
    for optimizer in (fw.round_optimizer, fw.round_optimizer2):
        assert int(optimizer.inner().iterations) == 2
    assert int(fw.optimizer.inner().iterations) == 1         # stage 0's own optimizer


def test_a_run_restored_inside_a_round_continues_exactly(tmp_path):
    config = make_config("dmt", **ROUNDS)
    data = batches(["depth", "rgb"])
    original = build_framework(config, model_builder=_plain_builder)
    original.step.assign(1)
    run_steps(original, 3, data)                       # round 0, then one step of round 1
    saved = tf.train.Checkpoint(step=original.step, **checkpoints.trackable(
        original.checkpoint_items())).save(str(tmp_path / "ckpt"))
    resumed = build_framework(config, model_builder=_plain_builder)
    tf.train.Checkpoint(step=resumed.step, **checkpoints.trackable(
        resumed.checkpoint_items())).restore(saved).assert_existing_objects_matched()
    assert int(resumed.round) == 1
    assert int(resumed.round_optimizer.inner().iterations) == 1      # one step into round 1
    expected, got = (run_steps(fw, 2, data) for fw in (original, resumed))
    assert got == expected
    for name in ("model", "model2", "labeler1", "labeler2"):
        for a, b in zip(_weights(getattr(original, name)), _weights(getattr(resumed, name))):
            np.testing.assert_array_equal(a, b)


def test_two_replicas_cross_round_boundaries_as_one_device():
    """Each replica gets the same batch: the global values equal one device's; labellers and
    restarted optimizers stay in sync."""
    keys = {**ROUNDS, "dmt_round_steps": 1}
    single = build_framework(make_config("dmt", **keys), model_builder=_plain_builder)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = build_framework(make_config("dmt", **keys, batch_size=4, unlabeled_batch_size=4),
                               strategy, model_builder=_plain_builder)
    for name in ("model", "model2"):
        getattr(mirrored, name).set_weights(getattr(single, name).get_weights())
    data = batches(["depth", "rgb"])

    @tf.function
    def step():
        out = strategy.run(mirrored.train_step, args=data)
        return {k: strategy.reduce(mirrored.log_reduction(k), v, axis=None)
                for k, v in out.items()}

    for fw in (single, mirrored):
        fw.step.assign(1)
    for _ in range(2):                                  # rounds 0 and 1, each restarted
        expected = run_steps(single, 1, data)[0]
        got = {k: float(v) for k, v in step().items()}
        mirrored.step.assign_add(1)
        for name in ("loss", "mutual_loss", "mutual_loss2", "pseudo_kept", "dmt_round",
                     "learning_rate"):
            assert got[name] == pytest.approx(expected[name], rel=1e-4), name
    assert got["dmt_round"] == 1.0
    for var in mirrored.labeler1.weights + mirrored.round_optimizer.inner().variables:
        replicas = [v.numpy() for v in var.value.values] if hasattr(var.value, "values") \
            else [var.numpy()]
        np.testing.assert_allclose(replicas[0], replicas[-1], rtol=1e-5, atol=1e-6)
    iterations = mirrored.round_optimizer.inner().iterations.value      # restarted at round 1
    assert [int(v.numpy()) for v in iterations.values] == [1, 1]


def test_dmt_batch_normalisation_divides_both_terms_by_the_whole_batch():
    """L = U = 2: "batch" divides by L + U = 4, "separate" by 2, so every term halves."""
    frameworks = [build_framework(make_config("dmt", dmt_normalize=mode),
                                  model_builder=_plain_builder) for mode in ("batch", "separate")]
    for name in ("model", "model2", "labeler1", "labeler2"):
        getattr(frameworks[1], name).set_weights(getattr(frameworks[0], name).get_weights())
    data = batches(["depth", "rgb"])
    batch, separate = (run_steps(fw, 1, data)[0] for fw in frameworks)
    for name in ("supervised_loss", "supervised_loss2", "mutual_loss", "mutual_loss2"):
        assert batch[name] == pytest.approx(0.5 * separate[name], rel=1e-5), name


# --- through the trainer ---------------------------------------------------------------------

TINY_DEEPLAB = {"model": "deeplabv2", "backbone": "resnet50", "backbone_units": [1, 1, 1, 1],
                "width_multiplier": 0.0625}
TINY_FUSION = {"model": "linearfusion", "backbone": "tiny", "decoder_dim": 8,
               "modalities": ["rgb", "depth"]}


def test_linear_fusion_trains_across_a_round_boundary():
    fw = make("dmt", "linearfusion", **{**ROUNDS, "dmt_round_steps": 1})
    fw.step.assign(1)
    logs = run_steps(fw, 3, batches(["depth", "rgb"]))     # eager: rounds 0, 1, 1
    assert all(np.isfinite(v) for log in logs for v in log.values())
    assert [log["dmt_round"] for log in logs] == [0, 1, 1]
    assert logs[1]["pseudo_kept"] == 1.0 and logs[0]["pseudo_kept"] < 1.0


def test_stage_0_and_every_round_in_one_run_resume_inside_a_round(tmp_path):
    """DeepLab-v2 through train(): killed after step 4, resumed to 5."""
    records = write_records(tmp_path)
    model_keys = TINY_DEEPLAB
    keys = dict(framework="dmt", unlabeled_data=records, sup_only_steps=1,
                dmt_ratios=[0.5, 1.0], dmt_round_steps=2, save_step=1, keep_checkpoints=10,
                summary_step=0)
    train(tiny_config(tmp_path, records, model_keys, max_iteration=4, **keys))   # "killed"
    config = tiny_config(tmp_path, records, model_keys, max_iteration=5, **keys)
    folder = train(config)                                                       # resumed
    fw = build_framework(config, channels={"rgb": 3, "depth": 1})
    items = checkpoints.trackable(fw.checkpoint_items())
    tf.train.Checkpoint(step=fw.step, **items).restore(
        tf.train.latest_checkpoint(folder)).assert_existing_objects_matched()
    # step 1 stage 0; steps 2-3 round 0; 4-5 round 1 (its optimizers restarted at step 4)
    assert int(fw.step) == 5 and int(fw.round) == 1
    assert int(fw.optimizer.inner().iterations) == 1
    assert int(fw.round_optimizer.inner().iterations) == 2
    at_round_end = build_framework(config, channels={"rgb": 3, "depth": 1})
    tf.train.Checkpoint(step=at_round_end.step, **checkpoints.trackable(
        at_round_end.checkpoint_items())).restore(f"{folder}/ckpt-3").expect_partial()
    for labeler, network in ((fw.labeler1, at_round_end.model),
                             (fw.labeler2, at_round_end.model2)):
        for a, b in zip(_weights(labeler), _weights(network)):
            np.testing.assert_array_equal(a, b)
    restored = restore_eval_model(config)
    inputs = {"rgb": np.ones((1, 32, 64, 3), "float32"), "depth": np.ones((1, 32, 64, 1),
                                                                         "float32")}
    logits = restored({m: inputs[m] for m in config.modalities}, training=False)["logits"]
    assert tuple(logits.shape) == (1, 32, 64, 2) and np.all(np.isfinite(logits))
    second = restore_eval_model(config.replace(dmt_eval_network=2))
    for a, b in zip(_weights(second), _weights(fw.model2)):
        np.testing.assert_array_equal(a, b)
