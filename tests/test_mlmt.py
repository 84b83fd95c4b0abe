"""MLMT: the class filter, image-level targets, cosine-embedding loss, ramp and EMA against
hand-computed numbers; s4GAN + MLMT steps (one and two replicas), a killed and resumed run
through train(), and evaluate.py applying the filter."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from test_s4gan import make

from framework_testing import H, W, batches
from ssma_tf.config import load_config
from ssma_tf.frameworks import mlmt
from ssma_tf.frameworks.build import build_framework
from ssma_tf.frameworks.losses import present_classes
from ssma_tf.frameworks.mean_teacher import ema_decay
from ssma_tf.training import checkpoints
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import train
from trainer_data import TINY_ADAPNET, write_records

# --- by hand ---------------------------------------------------------------------------------

# One image of 1x2 pixels, 3 classes. Scores 0.1 (absent), 0.3 and 0.2 (present: >= 0.2).
LOGITS = np.array([[[[2.0, 1.0, -1.0], [-3.0, -2.0, -1.0]]]], np.float32)
SCORES = np.array([[0.1, 0.3, 0.2]], np.float32)


def test_the_class_filter_zeroes_absent_classes_logits_as_the_code():
    out = mlmt.ClassFilter(0.2, "zero")(LOGITS, SCORES).numpy()
    np.testing.assert_array_equal(out, [[[[0.0, 1.0, -1.0], [0.0, -2.0, -1.0]]]])
    # pixel 0: class 0 (logit 2) is gone, class 1 wins; pixel 1: the zeroed absent class 0
    # still beats the negative present ones (the code's behaviour)
    np.testing.assert_array_equal(out.argmax(-1), [[[1, 0]]])


def test_the_neg_inf_filter_never_picks_an_absent_class():
    out = mlmt.ClassFilter(0.2, "neg_inf")(LOGITS, SCORES).numpy()
    np.testing.assert_array_equal(out[..., 0], np.float32([[[-1e30, -1e30]]]))
    np.testing.assert_array_equal(out[..., 1:], LOGITS[..., 1:])
    np.testing.assert_array_equal(out.argmax(-1), [[[1, 2]]])
    assert np.all(np.isfinite(tf.nn.softmax(out).numpy()))
    with pytest.raises(ValueError, match="class filter mode 'none'"):
        mlmt.ClassFilter(0.2, "none")


def test_image_targets_are_the_classes_with_a_valid_pixel():
    labels = tf.constant([[[0, 255], [2, 2]], [[255, 255], [255, 5]]])   # 5 >= C: ignored
    np.testing.assert_array_equal(present_classes(labels, 3, 255).numpy(),
                                  [[1, 0, 1], [0, 0, 0]])


def test_cosine_embedding_loss_is_one_minus_the_cosine_over_the_global_batch():
    student = tf.constant([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    teacher = tf.constant([[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
    # cosines 0, 1, 24/25 -> 1 + 0 + 1/25, over a global batch of 4
    loss = mlmt.cosine_embedding_loss(student, teacher, global_batch_size=4)
    assert float(loss) == pytest.approx((1.0 + 1.0 / 25.0) / 4.0, rel=1e-6)


def test_the_consistency_ramp_burns_in_then_rises_linearly():
    got = [float(mlmt.consistency_ramp(t, 2, 4)) for t in (0, 1, 2, 3, 6, 10)]
    assert got == [0.0, 0.0, 0.0, 0.25, 1.0, 1.0]
    assert [float(mlmt.consistency_ramp(t, 2, 0)) for t in (1, 2)] == [0.0, 1.0]


def test_the_ema_decay_is_min_of_one_minus_one_over_t_plus_one_and_the_cap():
    assert [float(ema_decay(t, 0.999)) for t in (0, 1, 9)] == pytest.approx([0.0, 0.5, 0.9])
    assert float(ema_decay(5000, 0.999)) == pytest.approx(0.999)


# --- s4GAN + MLMT, one step ------------------------------------------------------------------

TINY_CLASSIFIER = {"mlmt": True, "mlmt_units": [1, 1, 1, 1], "mlmt_width": 0.0625}


def _weights(model, trainable=True):
    return [w.numpy().copy() for w in (model.trainable_weights if trainable else model.weights)]


def test_the_classifier_sees_every_modality_and_trains_as_a_mean_teacher():
    fw = make("rgbd", threshold_st=0.0, d_dropout=0.0, **TINY_CLASSIFIER)
    branch = fw.mlmt
    assert fw.two_views and set(branch.classifier.input) == {"rgb", "depth"}
    assert branch.classifier.get_layer("mlmt_concat").output.shape[-1] == 4
    sgd = branch.optimizer.inner()
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov
    assert float(branch.optimizer.learning_rate()) == pytest.approx(3e-2)
    items = fw.checkpoint_items()
    assert {"classifier", "classifier_teacher", "optimizer_classifier_encoder"} <= set(items)
    (labeled, labels), unlabeled = batches(["depth", "rgb"])
    student_view = {k: v * 1.1 for k, v in unlabeled.items()}
    fw.step.assign(0)
    logs = {k: float(v) for k, v in fw.train_step((labeled, labels),
                                                  (unlabeled, student_view)).items()}
    assert {"mlmt_loss", "mlmt_bce_loss", "mlmt_cosine_loss", "loss", "d_loss"} <= set(logs)
    assert logs["mlmt_loss"] == pytest.approx(logs["mlmt_bce_loss"] + logs["mlmt_cosine_loss"],
                                              rel=1e-6)            # ramp off: weight 1
    # cosine to 1e-4 over max_iteration 10, read after 1 step
    expected_lr = 1e-4 + (3e-2 - 1e-4) * 0.5 * (1 + np.cos(np.pi * 0.1))
    assert logs["mlmt_learning_rate"] == pytest.approx(expected_lr, rel=1e-5)
    for a, b in zip(_weights(branch.teacher), _weights(branch.classifier)):   # step 0: copy
        np.testing.assert_array_equal(a, b)
    teacher_before = _weights(branch.teacher)
    fw.step.assign(1)
    fw.train_step((labeled, labels), (unlabeled, student_view))
    for old, new, student in zip(teacher_before, _weights(branch.teacher),
                                 _weights(branch.classifier)):          # decay 0.5
        np.testing.assert_allclose(new, 0.5 * old + 0.5 * student, rtol=1e-5, atol=1e-7)
    # the eval model: segmenter logits filtered by the teacher's scores
    out = fw.eval_model(labeled, training=False)
    scores = tf.nn.sigmoid(branch.teacher(labeled, training=False)).numpy()
    raw = fw.model(labeled, training=False)["logits"].numpy()
    np.testing.assert_allclose(out["class_scores"].numpy(), scores, rtol=1e-5)
    np.testing.assert_allclose(out["logits"].numpy(),
                               raw * (scores >= 0.2)[:, None, None, :], rtol=1e-5, atol=1e-6)


def test_two_replicas_keep_the_classifier_in_sync_and_log_the_single_device_values():
    single = make("rgb", threshold_st=0.0, d_dropout=0.0, **TINY_CLASSIFIER)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make("rgb", threshold_st=0.0, d_dropout=0.0, batch_size=4,
                        unlabeled_batch_size=4, **TINY_CLASSIFIER)
    for name in ("model", "discriminator"):
        getattr(mirrored, name).set_weights(getattr(single, name).get_weights())
    for name in ("classifier", "teacher"):
        getattr(mirrored.mlmt, name).set_weights(getattr(single.mlmt, name).get_weights())
    (labeled, labels), unlabeled = batches(["rgb"])
    data = ((labeled, labels), (unlabeled, unlabeled))
    expected = {k: float(v) for k, v in single.train_step(*data).items()}

    @tf.function
    def step():
        out = strategy.run(mirrored.train_step, args=data)
        return {k: strategy.reduce(mirrored.log_reduction(k), v, axis=None)
                for k, v in out.items()}

    got = {k: float(v) for k, v in step().items()}
    for name in ("mlmt_loss", "mlmt_bce_loss", "mlmt_cosine_loss", "loss"):
        assert got[name] == pytest.approx(expected[name], rel=1e-4), name
    for var in mirrored.mlmt.teacher.weights:
        replicas = [v.numpy() for v in var.value.values]
        np.testing.assert_allclose(replicas[0], replicas[1], rtol=1e-5, atol=1e-6)


# --- through the trainer and evaluate.py -----------------------------------------------------

@pytest.fixture(scope="module")
def mlmt_run(tmp_path_factory):
    """s4GAN + MLMT on SSMA over tiny AdapNet++ experts (rgb + depth): trained 2 steps,
    "killed", resumed to 3. Returns the config file's path."""
    folder = tmp_path_factory.mktemp("mlmt")
    records = write_records(folder)
    values = {**TINY_ADAPNET, "model": "SSMA", "stage": "finetune", "framework": "s4gan",
              "modalities": ["rgb", "depth"], "train_data": records, "unlabeled_data": records,
              "test_data": records, "checkpoint": str(folder / "ckpt"), "d_channels": 4,
              "threshold_st": 0.0, "max_iteration": 2, "save_step": 1, "summary_step": 0,
              "photometric": True, **TINY_CLASSIFIER}
    path = folder / "run.config"
    path.write_text(yaml.safe_dump(values))
    train(load_config(str(path)))
    train(load_config(str(path), ["max_iteration=3"]))
    values["max_iteration"] = 3
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_a_resumed_run_restores_the_classifier_its_teacher_and_optimizer(mlmt_run):
    config = load_config(mlmt_run)
    folder = config.checkpoint
    restored = []
    for _ in range(2):        # fresh frameworks (different initial weights), restored
        fw = build_framework(config, channels={"rgb": 3, "depth": 1})
        tf.train.Checkpoint(step=fw.step, **checkpoints.trackable(
            fw.checkpoint_items())).restore(f"{folder}/ckpt-3").assert_existing_objects_matched()
        assert int(fw.step) == 3 and int(fw.mlmt.optimizer.inner().iterations) == 3
        assert int(fw.d_optimizer.inner().iterations) == 3
        restored.append([_weights(m, trainable=False)
                         for m in (fw.mlmt.classifier, fw.mlmt.teacher, fw.discriminator)])
    for a, b in zip(*restored):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    before = build_framework(config, channels={"rgb": 3, "depth": 1})
    tf.train.Checkpoint(**checkpoints.trackable(before.checkpoint_items())).restore(
        f"{folder}/ckpt-2").expect_partial()
    assert not np.allclose(_weights(before.mlmt.classifier)[0], restored[0][0][0])
    model = restore_eval_model(config)
    assert {"logits", "unfiltered_logits", "class_scores"} <= set(model.output)
    teacher = dict(zip([w.path for w in fw.mlmt.teacher.weights], restored[0][1]))
    for w in model.get_layer("mlmt_classifier").weights:
        np.testing.assert_array_equal(w.numpy(), teacher[w.path])


def _evaluate(config_path, tmp_path, *overrides):
    import evaluate

    output = tmp_path / "metrics.json"
    args = ["--config", config_path, "--output", str(output)]
    for override in overrides:
        args += ["--override", override]
    assert evaluate.main(args) == 0
    return np.array(json.loads(output.read_text())["results"]["full"]["confusion_matrix"])


def test_evaluate_applies_the_class_filter_and_an_override_turns_it_off(mlmt_run, tmp_path):
    off = _evaluate(mlmt_run, tmp_path, "mlmt_filter=none")
    assert off[:, 1].sum() > 0 and off[:, 0].sum() > 0      # the segmenter predicts both
    # threshold 1: no class is present, every logit is 0, so every pixel is class 0
    none = _evaluate(mlmt_run, tmp_path, "mlmt_threshold=1.0")
    assert none[:, 1].sum() == 0 and none.sum() == off.sum()
    # threshold 0: every class present, the filter changes nothing
    np.testing.assert_array_equal(_evaluate(mlmt_run, tmp_path, "mlmt_threshold=0.0"), off)
    # the default (0.2) against the teacher's own scores, image by image
    config = load_config(mlmt_run)
    model = restore_eval_model(config)
    images = {"rgb": np.random.default_rng(0).normal(size=(1, H, W, 3)).astype("float32"),
              "depth": np.ones((1, H, W, 1), "float32")}
    out = model(images, training=False)
    present = (out["class_scores"].numpy() >= 0.2)[:, None, None, :]
    np.testing.assert_allclose(out["logits"].numpy(),
                               out["unfiltered_logits"].numpy() * present, atol=1e-6)
