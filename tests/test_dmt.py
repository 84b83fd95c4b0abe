"""DMT: dynamic mutual weights and class-balanced selection against hand-computed numbers;
the `dmt` framework's train step and a short trainer run."""

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

from test_frameworks_ssl import batches, make, run_steps  # noqa: E402

from ssma_tf.training.checkpoints import restore_eval_model  # noqa: E402
from ssma_tf.training.trainer import train  # noqa: E402
from trainer_data import tiny_config, write_records  # noqa: E402

OTHER_CHOICES = {"dmt_selection": "paper", "dmt_normalize": "separate",
                 "dmt_labeler_train_mode": True, "dmt_ratio": 1.0}


@pytest.mark.parametrize("labeler,keys", [("frozen", {"dmt_ratio": 0.5}),
                                          ("live", OTHER_CHOICES)])
def test_dmt_graph_step_trains_both_networks(labeler, keys):
    fw = make("dmt", dmt_labeler=labeler, dmt_subsample=1, **keys)
    data = batches(["depth", "rgb"])
    before = [[w.numpy() for w in m.trainable_weights] for m in (fw.model, fw.model2)]
    logs = run_steps(fw, 2, data, graph=True)[0]
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert {"loss", "supervised_loss", "supervised_loss2", "mutual_loss", "mutual_loss2",
            "pseudo_kept", "mean_weight", "learning_rate"} <= set(logs)
    if keys["dmt_ratio"] < 1:
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
        assert {"labeler1", "labeler2", "model2"} <= set(fw.checkpoint_items())
    else:
        assert "labeler1" not in fw.checkpoint_items()
    for name in ("supervised_loss2", "mutual_loss2", "pseudo_kept", "mean_weight"):
        assert name in fw.log_reductions


def test_dmt_pseudo_labels_are_the_class_balanced_selection():
    fw = make("dmt", dmt_ratio=0.5, dmt_subsample=1)
    inputs = batches(["depth", "rgb"])[1]
    labels, confidence = fw.pseudo_labels(fw.model, inputs)
    probs = tf.nn.softmax(fw.model(inputs, training=False)["logits"]).numpy()
    expected = dmt_loss.select_pseudo_labels(
        probs.argmax(-1), probs.max(-1),
        dmt_loss.class_thresholds(probs.argmax(-1), probs.max(-1), 3, 0.5, subsample=1))
    np.testing.assert_array_equal(labels.numpy(), expected)
    np.testing.assert_allclose(confidence.numpy(), probs.max(-1), rtol=1e-5)


def test_dmt_trains_through_the_trainer(tmp_path):
    records = write_records(tmp_path)
    config = tiny_config(tmp_path, records, framework="dmt", unlabeled_data=records,
                         max_iteration=2, summary_step=0)
    train(config)
    restored = restore_eval_model(config)
    logits = restored({"rgb": np.ones((1, 32, 64, 3), "float32")}, training=False)["logits"]
    assert tuple(logits.shape) == (1, 32, 64, 2) and np.all(np.isfinite(logits))


def _plain_builder():
    """Conv-BN-ReLU-conv without dropout: two frameworks with equal weights compute equal
    losses."""
    import keras
    inputs = {m: keras.Input((None, None, c), name=m) for m, c in (("rgb", 3), ("depth", 1))}
    x = keras.layers.Concatenate()([inputs["rgb"], inputs["depth"]])
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3,
                                                                                  padding="same")(x)))
    return keras.Model(inputs, {"logits": keras.layers.Conv2D(3, 1)(x)})


def test_dmt_batch_normalisation_divides_both_terms_by_the_whole_batch():
    """L = U = 2: "batch" divides by L + U = 4, "separate" by 2, so every term halves."""
    from test_frameworks_ssl import make_config

    from ssma_tf.frameworks.build import build_framework
    frameworks = [build_framework(make_config("dmt", dmt_normalize=mode),
                                  model_builder=_plain_builder) for mode in ("batch", "separate")]
    for name in ("model", "model2", "labeler1", "labeler2"):
        getattr(frameworks[1], name).set_weights(getattr(frameworks[0], name).get_weights())
    data = batches(["depth", "rgb"])
    batch, separate = (run_steps(fw, 1, data)[0] for fw in frameworks)
    for name in ("supervised_loss", "supervised_loss2", "mutual_loss", "mutual_loss2"):
        assert batch[name] == pytest.approx(0.5 * separate[name], rel=1e-5), name
