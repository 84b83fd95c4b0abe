"""s4GAN: feature matching, threshold_st self-training, the discriminator's BCE and input,
one graph-mode step on an RGB-D and an RGB model, a short run through train()."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from framework_testing import NUM_CLASSES, H, L, U, W, batches
from ssma_tf.config import config_from_dict
from ssma_tf.frameworks import s4gan
from ssma_tf.frameworks.build import build_framework
from ssma_tf.training import checkpoints
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import train
from trainer_data import tiny_config, write_records

# --- the loss terms, by hand -------------------------------------------------------------

def test_feature_matching_is_the_l1_of_the_batch_mean_features():
    real = tf.constant([[1.0, 2.0, 0.0], [3.0, 4.0, 2.0]])        # means 2, 3, 1
    fake = tf.constant([[0.0, 0.0, 4.0], [2.0, 6.0, 0.0], [1.0, 3.0, 2.0]])  # 1, 3, 2
    # |2 - 1|, |3 - 3|, |1 - 2| -> mean 2/3
    assert float(s4gan.feature_matching_loss(real, fake)) == pytest.approx(2.0 / 3.0)


def test_threshold_st_selects_images_above_it_and_the_st_loss_covers_only_them():
    scores = tf.constant([[0.9], [0.6], [0.3], [0.61]])
    selected = s4gan.st_selection(scores, 0.6)
    np.testing.assert_array_equal(selected.numpy(), [True, False, False, True])  # strict >
    # Four images of 1x2 pixels, 2 classes; logits (a, b) per pixel.
    logits = tf.constant([[[[2.0, 0.0], [0.0, 1.0]]],
                          [[[5.0, 0.0], [5.0, 0.0]]],
                          [[[0.0, 3.0], [0.0, 3.0]]],
                          [[[1.0, 1.0], [0.0, 0.5]]]])
    inputs = {"rgb": tf.ones([4, 1, 2, 3])}                      # no crop padding
    targets = s4gan.self_training_targets(logits, inputs, selected, ignore_label=255)
    # argmax on the selected rows (a tie goes to class 0), ignore on the others
    np.testing.assert_array_equal(targets.numpy(), [[[0, 1]], [[255, 255]], [[255, 255]],
                                                    [[0, 1]]])

    def ce(a, b, label):           # -log softmax(a, b)[label]
        return math.log(math.exp(a) + math.exp(b)) - (a, b)[label]

    image0 = (ce(2, 0, 0) + ce(0, 1, 1)) / 2
    image3 = (ce(1, 1, 0) + ce(0, 0.5, 1)) / 2
    loss = s4gan.self_training_loss({"logits": logits}, {"logits": 1.0}, targets,
                                    num_classes=2, ignore_label=255, global_selected=2)
    assert float(loss) == pytest.approx((image0 + image3) / 2, rel=1e-6)
    none = s4gan.self_training_targets(logits, inputs, tf.zeros([4], tf.bool))
    assert float(s4gan.self_training_loss({"logits": logits}, {"logits": 1.0}, none,
                                          num_classes=2, ignore_label=255,
                                          global_selected=0)) == 0.0


def test_discriminator_bce_is_half_the_real_and_fake_means():
    real = tf.constant([[0.0], [math.log(3.0)]])                  # p = 0.5, 0.75
    fake = tf.constant([[math.log(1.0 / 3.0)]])                    # p = 0.25
    expected = 0.5 * ((math.log(2.0) + math.log(4.0 / 3.0)) / 2 + math.log(4.0 / 3.0))
    got = s4gan.discriminator_loss(real, fake, global_real=2, global_fake=1)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # a replica's share: its rows over the global batch
    half = s4gan.discriminator_loss(real, fake, global_real=4, global_fake=2)
    assert float(half) == pytest.approx(expected / 2, rel=1e-6)


def test_one_hot_truth_leaves_ignored_pixels_all_zero_and_images_are_min_max_normalised():
    labels = tf.constant([[[0, 2, 255, 5]]])
    np.testing.assert_array_equal(s4gan.one_hot_truth(labels, 3).numpy(),
                                  [[[[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]]])
    rgb = tf.constant([[[[-1.0, 0.0, 1.0]]], [[[3.0, 1.0, 0.0]]]])      # min -1, max 3
    depth = tf.constant([[[[2.0]]], [[[4.0]]]])                          # min 2, max 4
    out = s4gan.minmax_images({"rgb": rgb, "depth": depth}).numpy()     # depth first
    np.testing.assert_allclose(out, [[[[0.0, 0.0, 0.25, 0.5]]], [[[1.0, 1.0, 0.5, 0.25]]]])


# --- the framework on tiny models ---------------------------------------------------------

def rgbd_builder():
    inputs = {"rgb": keras.Input((None, None, 3), name="rgb"),
              "depth": keras.Input((None, None, 1), name="depth")}
    x = keras.layers.Concatenate()([keras.layers.Conv2D(4, 3, padding="same")(inputs[m])
                                    for m in ("rgb", "depth")])
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="logits")(x)
    aux = keras.layers.Conv2D(NUM_CLASSES, 1, name="aux")(x)
    model = keras.Model(inputs, {"logits": logits, "aux": aux})
    model.output_loss_weights = {"logits": 1.0, "aux": 0.5}
    return model


def rgb_builder():
    rgb = keras.Input((None, None, 3), name="rgb")
    x = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same")(rgb))
    return keras.Model({"rgb": rgb}, {"logits": keras.layers.Conv2D(NUM_CLASSES, 1)(x)})


BUILDERS = {"rgbd": (rgbd_builder, ["depth", "rgb"]), "rgb": (rgb_builder, ["rgb"])}


def make(kind, **overrides):
    builder, modalities = BUILDERS[kind]
    config = config_from_dict({
        "framework": "s4gan", "model": "linearfusion", "num_classes": NUM_CLASSES,
        "batch_size": L, "unlabeled_batch_size": U, "height": H, "width": W,
        "learning_rate": 1e-3, "max_iteration": 10, "modalities": modalities,
        "d_channels": 4, "lr_multipliers": {"decoder": 10.0}, **overrides})
    return build_framework(config, model_builder=builder)



@pytest.mark.parametrize("kind, channels", [("rgbd", 3 + 3 + 1), ("rgb", 3 + 3)])
def test_the_discriminator_sees_the_class_map_and_every_modality(kind, channels):
    fw = make(kind)
    assert fw.discriminator.input_shape[-1] == channels
    (inputs_l, labels), _ = batches(BUILDERS[kind][1])
    out = fw.discriminate(s4gan.one_hot_truth(labels, NUM_CLASSES), inputs_l)
    assert out["logit"].shape == (L, 1) and out["features"].shape == (L, 8 * 4)
    if kind == "rgbd":           # changing the depth alone changes what D sees
        d = fw.discriminator_input(tf.zeros([L, H, W, NUM_CLASSES]), inputs_l)
        moved = dict(inputs_l, depth=tf.reverse(inputs_l["depth"], axis=[1]))
        d2 = fw.discriminator_input(tf.zeros([L, H, W, NUM_CLASSES]), moved)
        assert not np.allclose(d[..., NUM_CLASSES:NUM_CLASSES + 1],
                               d2[..., NUM_CLASSES:NUM_CLASSES + 1])
        np.testing.assert_array_equal(d[..., NUM_CLASSES + 1:], d2[..., NUM_CLASSES + 1:])


@pytest.mark.parametrize("kind", ["rgbd", "rgb"])
def test_one_graph_step_trains_both_networks_each_on_its_own_optimizer(kind):
    fw = make(kind, threshold_st=0.0)
    assert fw.networks() == [(fw.model, fw.optimizer)]
    assert fw.eval_model is fw.model
    items = fw.checkpoint_items()
    assert items["discriminator"] is fw.discriminator
    assert any(k.startswith("optimizer_discriminator") for k in items)
    d_adam = fw.d_optimizer.inner()
    assert isinstance(d_adam, keras.optimizers.Adam)
    assert float(d_adam.beta_1) == 0.9 and float(d_adam.beta_2) == 0.99
    # its own lr: 1e-4, no decoder x10 multiplier; the segmenter's decoder gets 1e-2
    assert float(fw.d_optimizer.learning_rate()) == pytest.approx(1e-4)
    assert float(fw.optimizer.learning_rate("decoder")) == pytest.approx(1e-2)
    data = batches(BUILDERS[kind][1])
    seg_before = [w.numpy().copy() for w in fw.model.trainable_weights]
    d_before = [w.numpy().copy() for w in fw.discriminator.trainable_weights]
    step = tf.function(fw.train_step)
    logs = []
    for _ in range(2):
        logs.append({k: float(v) for k, v in step(*data).items()})
        fw.step.assign_add(1)
    for values in logs:
        assert all(np.isfinite(v) for v in values.values()), values
    assert {"loss", "supervised_loss", "fm_loss", "st_loss", "d_loss",
            "st_fraction"} <= set(logs[0])
    assert logs[0]["st_fraction"] == 0.0 and logs[0]["st_loss"] == 0.0   # none at step 0
    assert logs[1]["st_fraction"] == 1.0 and logs[1]["st_loss"] > 0.0    # threshold 0: all
    # poly over max_iteration 10, read after the step (as learning_rate): 2 steps taken
    assert logs[1]["d_learning_rate"] == pytest.approx(1e-4 * (1 - 2 / 10) ** 0.9, rel=1e-5)
    for before, after in ((seg_before, fw.model.trainable_weights),
                          (d_before, fw.discriminator.trainable_weights)):
        assert all(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
    assert fw.log_reduction("st_fraction") == tf.distribute.ReduceOp.MEAN
    assert fw.log_reduction("d_loss") == tf.distribute.ReduceOp.SUM


def test_linear_fusion_trains_under_s4gan_every_stream_on_the_pseudo_labels():
    from test_frameworks_ssl import fusion_builder
    config = make("rgb").config.replace(modalities=["depth", "rgb"], threshold_st=0.0)
    fw = build_framework(config, model_builder=fusion_builder)
    assert fw.discriminator.input_shape[-1] == NUM_CLASSES + 1 + 3
    data = batches(["depth", "rgb"])
    before = [w.numpy().copy() for w in fw.model.trainable_weights]
    logs = []
    for _ in range(2):                              # eager: no tracing of the MiT streams
        logs.append({k: float(v) for k, v in fw.train_step(*data).items()})
        fw.step.assign_add(1)
    assert all(np.isfinite(v) for log in logs for v in log.values())
    assert logs[1]["st_fraction"] == 1.0 and logs[1]["st_loss"] > 0.0
    assert sum(not np.allclose(b, a.numpy())
               for b, a in zip(before, fw.model.trainable_weights)) > len(before) // 2


def test_the_step_loss_is_the_weighted_sum_and_a_high_threshold_selects_nothing():
    fw = make("rgbd", threshold_st=1.0, lambda_fm=2.0, d_dropout=0.0)
    fw.step.assign(1)
    logs = {k: float(v) for k, v in fw.train_step(*batches(["depth", "rgb"])).items()}
    assert logs["st_fraction"] == 0.0 and logs["st_loss"] == 0.0
    assert logs["loss"] == pytest.approx(logs["supervised_loss"] + 2.0 * logs["fm_loss"],
                                         rel=1e-6)
    assert logs["fm_loss"] > 0.0


def test_in_the_step_only_the_image_d_scores_above_threshold_st_self_trains():
    fw = make("rgb", d_dropout=0.0)          # no dropout anywhere: scores are repeatable
    fw.step.assign(1)
    data = batches(["rgb"], seed=1)
    logits = fw.model(data[1], training=True)["logits"]
    scores = tf.nn.sigmoid(fw.discriminate(tf.nn.softmax(logits), data[1])["logit"])
    scores = scores.numpy().ravel()
    assert scores[0] != scores[1]
    fw.config = fw.config.replace(threshold_st=float(scores.mean()))
    best = int(np.argmax(scores))
    row = logits[best].numpy().astype(np.float64)
    log_probs = row - np.log(np.exp(row).sum(-1, keepdims=True))
    expected = float(np.mean(-log_probs.max(-1)))     # CE against its own argmax
    logs = {k: float(v) for k, v in fw.train_step(*data).items()}
    assert logs["st_fraction"] == 0.5
    assert logs["st_loss"] == pytest.approx(expected, rel=1e-5)


def test_the_supervised_only_phase_leaves_the_discriminator_alone():
    fw = make("rgb", sup_only_steps=1)
    d_before = [w.numpy().copy() for w in fw.discriminator.trainable_weights]
    (labeled, _) = batches(["rgb"])
    logs = fw.supervised_only_step(labeled)
    assert np.isfinite(float(logs["loss"]))
    for b, a in zip(d_before, fw.discriminator.trainable_weights):
        np.testing.assert_array_equal(b, a.numpy())


def test_two_replicas_log_the_single_device_values_of_the_same_batch_twice():
    """Each replica gets the same batch: the global means equal one device's on it (ST over
    the selected images of all replicas, L_fm averaged over them), weights stay in sync."""
    single = make("rgb", threshold_st=0.0, d_dropout=0.0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make("rgb", threshold_st=0.0, d_dropout=0.0, batch_size=2 * L,
                        unlabeled_batch_size=2 * U)
    mirrored.model.set_weights(single.model.get_weights())
    mirrored.discriminator.set_weights(single.discriminator.get_weights())
    for fw in (single, mirrored):
        fw.step.assign(1)
    data = batches(["rgb"])
    expected = {k: float(v) for k, v in single.train_step(*data).items()}

    @tf.function
    def step():
        out = strategy.run(mirrored.train_step, args=data)
        return {k: strategy.reduce(mirrored.log_reduction(k), v, axis=None)
                for k, v in out.items()}

    got = {k: float(v) for k, v in step().items()}
    assert got["st_fraction"] == 1.0
    for name in ("loss", "supervised_loss", "fm_loss", "st_loss", "d_loss", "st_fraction"):
        assert got[name] == pytest.approx(expected[name], rel=1e-4), name
    for var in mirrored.discriminator.weights:
        replicas = [v.numpy() for v in var.value.values]
        np.testing.assert_allclose(replicas[0], replicas[1], rtol=1e-5, atol=1e-6)


# --- through the trainer -----------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


def test_s4gan_trains_through_train_and_saves_the_discriminator(tmp_path, records):
    config = tiny_config(tmp_path, records, framework="s4gan", unlabeled_data=records,
                         d_channels=4, threshold_st=0.0, sup_only_steps=1, max_iteration=3,
                         summary_step=0)
    folder = train(config)
    latest = tf.train.latest_checkpoint(folder)
    restored = []
    for _ in range(2):       # two fresh frameworks (different initial weights), restored
        fw = build_framework(config, channels={"rgb": 3, "depth": 1})
        tf.train.Checkpoint(step=fw.step, **checkpoints.trackable(
            fw.checkpoint_items())).restore(latest).assert_existing_objects_matched()
        # step 1 supervised only: the discriminator stepped at steps 2 and 3
        assert int(fw.step) == 3 and int(fw.d_optimizer.inner().iterations) == 2
        restored.append([w.numpy() for w in fw.discriminator.weights])
    for a, b in zip(*restored):
        np.testing.assert_array_equal(a, b)
    fresh = build_framework(config, channels={"rgb": 3, "depth": 1}).discriminator
    assert not np.allclose(fresh.weights[0].numpy(), restored[0][0])
    model = restore_eval_model(config)
    logits = model({"rgb": np.ones((1, H, W, 3), "float32")}, training=False)["logits"]
    assert tuple(logits.shape) == (1, H, W, 2) and np.all(np.isfinite(logits))
