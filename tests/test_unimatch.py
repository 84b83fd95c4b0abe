"""UniMatch: the loss terms and masks by hand, CutMix boxes and pasting, channel dropout, the
strong photometric ops, the model's feature split, one step against plain forwards, runs
through train() (one device and two replicas) and a resume that repeats the run exactly."""

import math
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from framework_testing import NUM_CLASSES, H, L, U, W, batches
from ssma_tf.config import config_from_dict
from ssma_tf.data import photometric
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks import unimatch
from ssma_tf.frameworks.build import build_framework
from ssma_tf.frameworks.feature_split import feature_split
from ssma_tf.frameworks.losses import padding_pixels
from ssma_tf.models.factory import build_model
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import train
from trainer_data import TINY_ADAPNET_MODEL, tiny_config, write_records

TINY_RESNET = {"backbone": "resnet50", "backbone_units": [1, 1, 1, 1],
               "width_multiplier": 0.0625}
TINY_DEEPLAB = {"model": "deeplabv3plus", **TINY_RESNET}

# --- the loss terms, by hand -------------------------------------------------------------


def test_consistency_loss_counts_unconfident_pixels_in_the_divisor_and_skips_padding():
    # three pixels, logits [0, ln 3]: softmax (1/4, 3/4)
    logits = tf.constant([[[[0.0, math.log(3.0)]] * 3]])            # [1, 1, 3, 2]
    labels = tf.constant([[[1, 0, 1]]])
    confidence = tf.constant([[[0.9, 0.5, 0.99]]])
    padding = tf.constant([[[False, False, True]]])
    outputs = {"logits": logits, "aux": 2.0 * logits}
    # pixel 0 trains (conf 0.9 >= 0.6), pixel 1 is below the threshold but counts in the
    # divisor, pixel 2 is padding: out of both
    got = unimatch.consistency_loss(outputs, {"logits": 1.0}, labels, confidence, padding, 0.6)
    assert float(got) == pytest.approx(-math.log(0.75) / 2)
    aux_ce = -math.log(9.0 / 10.0)                                   # softmax(0, 2 ln 3)
    got = unimatch.consistency_loss(outputs, {"logits": 1.0, "aux": 0.5}, labels, confidence,
                                    padding, 0.6)
    assert float(got) == pytest.approx((-math.log(0.75) + 0.5 * aux_ce) / 2)
    # threshold 0: pixel 1 trains too (label 0: -ln 1/4)
    got = unimatch.consistency_loss(outputs, {"logits": 1.0}, labels, confidence, padding, 0.0)
    assert float(got) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2)
    everything_padded = tf.ones_like(padding)
    assert float(unimatch.consistency_loss(outputs, {"logits": 1.0}, labels, confidence,
                                           everything_padded, 0.0)) == 0.0


def test_the_total_halves_the_weighted_sum():
    got = unimatch.unimatch_total(1.0, 2.0, 3.0, 4.0, strong_weight=0.25, fp_weight=0.5)
    assert got == pytest.approx((1.0 + 0.25 * (2.0 + 3.0) + 0.5 * 4.0) / 2)


def test_paste_takes_the_previous_rows_pixels_inside_the_box():
    own = tf.constant([[[10, 11]], [[20, 21]], [[30, 31]]])           # [3, 1, 2]
    partner = tf.constant([[[1, 2]], [[3, 4]], [[5, 6]]])
    box = tf.constant([[[True, False]], [[False, False]], [[False, True]]])
    got = unimatch.paste(own, partner, box).numpy()
    # row 0 takes row 2's partner pixel at column 0; row 2 takes row 1's at column 1
    np.testing.assert_array_equal(got, [[[5, 11]], [[20, 21]], [[30, 4]]])
    images = tf.reshape(tf.range(3 * 2 * 2, dtype=tf.float32), [3, 1, 2, 2])
    pasted = unimatch.paste(images, images, box).numpy()
    np.testing.assert_array_equal(pasted[0, 0, 0], images[2, 0, 0])
    np.testing.assert_array_equal(pasted[0, 0, 1], images[0, 0, 1])


def test_the_mixed_targets_of_a_box_are_the_partners_labels_confidence_and_padding():
    """Inside row i's box: labels and confidence of row i-1's inference-mode prediction and
    its padding; outside: row i's own weak-view targets."""
    labels_w = tf.constant([[[0, 0]], [[1, 1]]])
    conf_w = tf.constant([[[0.2, 0.3]], [[0.4, 0.5]]])
    pad = tf.constant([[[False, False]], [[False, True]]])
    labels_mix = tf.constant([[[2, 2]], [[3, 3]]])
    conf_mix = tf.constant([[[0.96, 0.97]], [[0.98, 0.99]]])
    box = tf.constant([[[False, True]], [[True, False]]])
    np.testing.assert_array_equal(unimatch.paste(labels_w, labels_mix, box), [[[0, 3]],
                                                                               [[2, 1]]])
    np.testing.assert_allclose(unimatch.paste(conf_w, conf_mix, box), [[[0.2, 0.99]],
                                                                        [[0.96, 0.5]]])
    np.testing.assert_array_equal(unimatch.paste(pad, pad, box), [[[False, True]],
                                                                   [[False, True]]])


def test_cutmix_boxes_are_one_fitting_box_of_the_drawn_area_or_none():
    masks = unimatch.cutmix_boxes(tf.constant([3, 4], tf.int64), 400, 40, 60).numpy()
    present = masks.any(axis=(1, 2))
    assert 0.4 < present.mean() < 0.6                                 # p = 0.5
    for mask in masks[present]:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert mask.sum() == len(rows) * len(cols)                    # one filled rectangle
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        area = len(rows) * len(cols) / (40 * 60)
        assert 0.005 < area <= 0.4 + 1e-9     # int() of the sides shrinks small boxes
        assert 0.3 * 0.5 < len(rows) / len(cols) < (1 / 0.3) * 2
    always = unimatch.cutmix_boxes(tf.constant([1, 2], tf.int64), 8, 16, 16, prob=1.0)
    assert always.numpy().any(axis=(1, 2)).all()
    never = unimatch.cutmix_boxes(tf.constant([1, 2], tf.int64), 8, 16, 16, prob=0.0)
    assert not never.numpy().any()


def test_box_mask_covers_rows_y_to_y_plus_h_and_columns_x_to_x_plus_w():
    mask = unimatch.box_mask(tf.constant([[1, 2, 2, 3]]), 4, 6).numpy()[0]
    expected = np.zeros((4, 6), bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_channel_dropout_zeroes_whole_channels_per_image_and_doubles_the_rest():
    feature = tf.ones([4, 3, 5, 16])
    got = unimatch.channel_dropout(feature, tf.constant([0, 1], tf.int64), 0.5).numpy()
    per_channel = got.reshape(4, 15, 16)
    assert np.all(per_channel == per_channel[:, :1])                  # constant per channel
    assert set(np.unique(got)) == {0.0, 2.0}
    assert 0.3 < (got[:, 0, 0] == 0).mean() < 0.7
    assert not np.array_equal(got[0, 0, 0], got[1, 0, 0])             # per image
    flat = tf.ones([4])
    assert unimatch.channel_dropout(flat, tf.constant([0, 1], tf.int64), 0.5) is flat
    assert unimatch.channel_dropout(feature, tf.constant([0, 1], tf.int64), 0.0) is feature


def test_pseudo_labels_are_the_argmax_and_top_probability():
    labels, conf = unimatch.pseudo_labels(tf.constant([[[[0.0, math.log(3.0)],
                                                         [math.log(4.0), 0.0]]]]))
    np.testing.assert_array_equal(labels, [[[1, 0]]])
    np.testing.assert_allclose(conf, [[[0.75, 0.8]]], rtol=1e-6)


# --- the strong photometric ops ----------------------------------------------------------

SEED = tf.constant([5, 6], tf.int64)


def _images(batch=6, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=(batch, 8, 10, 3)), tf.float32)


def test_grayscale_is_the_luma_on_three_channels():
    images = _images()
    got = photometric.random_grayscale(images, SEED, 1.0).numpy()
    luma = (images.numpy() * [0.299, 0.587, 0.114]).sum(-1)
    for c in range(3):
        np.testing.assert_allclose(got[..., c], luma, rtol=1e-5)
    np.testing.assert_array_equal(photometric.random_grayscale(images, SEED, 0.0), images)


def test_jitter_brightness_alone_scales_each_image_by_one_factor_in_range():
    images = _images() * 0.5                                         # no clipping at 1.5
    got = photometric.colour_jitter(images, SEED, brightness=0.5, contrast=0.0,
                                    saturation=0.0, hue=0.0).numpy()
    ratio = got / images.numpy()
    for image_ratio in ratio:
        np.testing.assert_allclose(image_ratio, image_ratio.flat[0], rtol=2e-3)  # HSV trip
        assert 0.5 <= image_ratio.flat[0] <= 1.5
    assert np.std(ratio[:, 0, 0, 0]) > 0.01                          # drawn per image


def _blend_factors(got, images, towards):
    """(got - towards) / (images - towards) per image, checked constant; the factors."""
    ratio = (got - towards) / (images - towards)
    far = np.abs(images - towards) > 0.02
    factors = []
    for image_ratio, image_far in zip(ratio, far):
        values = image_ratio[image_far]
        np.testing.assert_allclose(values, values[0], rtol=1e-2)
        factors.append(values[0])
    return np.array(factors)


def test_jitter_contrast_blends_toward_the_grey_mean_and_saturation_toward_grey():
    images = 0.4 + 0.2 * _images()                                   # nothing clips
    grey = photometric.grey(images).numpy()
    contrast = photometric.colour_jitter(images, SEED, brightness=0.0, contrast=0.5,
                                         saturation=0.0, hue=0.0).numpy()
    mean = grey.mean(axis=(1, 2, 3), keepdims=True)
    factors = _blend_factors(contrast, images.numpy(), mean)
    assert np.all((factors >= 0.5) & (factors <= 1.5)) and np.std(factors) > 0.01
    saturated = photometric.colour_jitter(images, SEED, brightness=0.0, contrast=0.0,
                                          saturation=0.5, hue=0.0).numpy()
    factors = _blend_factors(saturated, images.numpy(), grey)
    assert np.all((factors >= 0.5) & (factors <= 1.5)) and np.std(factors) > 0.01


def test_no_hue_shift_keeps_the_image_and_a_shift_changes_it_but_not_its_brightness():
    images = _images()
    same = photometric.colour_jitter(images, SEED, brightness=0.0, contrast=0.0,
                                     saturation=0.0, hue=0.0)
    np.testing.assert_allclose(same, images, atol=1e-5)
    shifted = photometric.colour_jitter(images, SEED, brightness=0.0, contrast=0.0,
                                        saturation=0.0, hue=0.25).numpy()
    assert np.abs(shifted - images.numpy()).max() > 0.05
    np.testing.assert_allclose(photometric.grey(tf.constant(shifted)).numpy().mean(),
                               photometric.grey(images).numpy().mean(), atol=0.1)


def test_blur_is_a_normalised_gaussian_with_replicated_edges():
    delta = np.zeros((1, 15, 15, 3), np.float32)
    delta[0, 7, 7] = 1.0
    got = photometric.gaussian_blur(tf.constant(delta), tf.constant([1.5]), 6).numpy()
    offsets = np.arange(-6, 7)
    g = np.exp(-offsets ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    np.testing.assert_allclose(got[0, 1:14, 1:14, 0], np.outer(g, g), rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_array_equal(got[0, 0], 0.0)                     # beyond the radius
    np.testing.assert_allclose(got.sum(), 3.0, rtol=1e-5)
    flat = tf.fill([2, 9, 9, 3], 0.3)
    np.testing.assert_allclose(photometric.gaussian_blur(flat, tf.constant([0.1, 2.0]), 6),
                               flat, rtol=1e-6)


def test_strong_colour_with_every_probability_zero_is_the_identity():
    images = _images()
    got = photometric.strong_colour(images, SEED, jitter_prob=0.0, grayscale_prob=0.0,
                                    blur_prob=0.0)
    np.testing.assert_allclose(got, images, atol=1e-6)
    np.testing.assert_allclose(photometric.unit_rgb(photometric.normalised_rgb(images)), images,
                               atol=1e-6)
    strong = photometric.strong_colour(images, SEED).numpy()
    assert strong.min() >= 0.0 and strong.max() <= 1.0 and not np.allclose(strong, images)


# --- the framework -----------------------------------------------------------------------

def make_config(model_keys=TINY_DEEPLAB, modalities=("rgb",), **changes):
    return config_from_dict({"framework": "unimatch", "num_classes": NUM_CLASSES,
                             "batch_size": L, "unlabeled_batch_size": U, "height": H,
                             "width": W, "learning_rate": 1e-3, "max_iteration": 50,
                             "modalities": list(modalities), **model_keys, **changes}, "test")


def make(model_keys=TINY_DEEPLAB, modalities=("rgb",), **changes):
    channels = {m: 1 if m == "depth" else 3 for m in modalities}
    fw = build_framework(make_config(model_keys, modalities, **changes), channels=channels)
    fw.colour_modalities = ["rgb"]            # as the records would say
    return fw


def test_a_strong_view_jitters_colour_only_and_keeps_the_padding_zero():
    fw = make(TINY_ADAPNET_MODEL | {"model": "SSMA", "stage": "finetune"}, ("rgb", "depth"))
    (_, _), weak = batches(["rgb", "depth"])
    weak = {m: tf.concat([tf.zeros_like(v[:, :, :8]), v[:, :, 8:]], axis=2)
            for m, v in weak.items()}                                 # 8 padding columns
    padding = padding_pixels(weak)
    view = fw.strong_view(weak, padding, tf.constant([1, 2], tf.int64))
    assert view["depth"] is weak["depth"]
    assert not np.allclose(view["rgb"], weak["rgb"])
    np.testing.assert_array_equal(view["rgb"][:, :, :8], 0.0)
    np.testing.assert_array_equal(padding_pixels(view), padding)


@pytest.mark.parametrize("model_keys, modalities, expected", [
    (TINY_DEEPLAB, ("rgb",), [(H // 16, W // 16, 128), (H // 4, W // 4, 16)]),   # P5, P2
    (TINY_ADAPNET_MODEL | {"model": "SSMA", "stage": "finetune"}, ("rgb", "depth"),
     [(H // 16, W // 16, 32), (H // 4, W // 4, 3), (H // 8, W // 8, 3)] * 2),
])
def test_the_feature_split_cuts_at_the_backbone_or_experts_and_decodes_as_the_model(
        model_keys, modalities, expected):
    config = make_config(model_keys, modalities)
    model = build_model(config, {"depth": 1})
    split = feature_split(model, config.model)
    x = {m: tf.random.normal([2, H, W, 1 if m == "depth" else 3]) for m in modalities}
    features = split.encode(x)
    assert [tuple(f.shape[1:]) for f in features] == expected
    np.testing.assert_allclose(split.decode(features, x)["logits"], model(x)["logits"],
                               atol=1e-5)
    zeroed = split.decode([tf.zeros_like(f) for f in features], x)["logits"]
    assert not np.allclose(zeroed, model(x)["logits"], atol=1e-3)     # the cut is live


def test_a_model_without_an_encoder_split_is_named_in_the_error():
    inputs = {"rgb": keras.Input((None, None, 3), name="rgb")}
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="logits")(inputs["rgb"])
    config = make_config(TINY_DEEPLAB)
    fw = build_framework(config, model_builder=lambda **_: keras.Model(inputs,
                                                                        {"logits": logits}))
    with pytest.raises(ConfigError, match="model deeplabv3plus has no encoder/decoder split"):
        fw.split


def test_one_step_without_perturbations_logs_the_losses_of_plain_forwards():
    """No colour ops, no boxes, no feature dropout, threshold 0: s1 = s2 = u, the FP stream
    decodes the clean features (the doubled batch has the clean batch's BN statistics), so
    every term is a CE of plain training-mode forwards against u's clean argmax."""
    fw = make(pseudo_threshold=0.0, fp_dropout=0.0, cutmix_prob=0.0, strong_jitter_prob=0.0,
              strong_grayscale_prob=0.0, strong_blur_prob=0.0)
    (inputs_l, labels), weak = batches(["rgb"])
    model = fw.model
    weights_before = [w.numpy() for w in model.weights]
    main = model({"rgb": tf.concat([inputs_l["rgb"], weak["rgb"]], 0)}, training=True)
    strong = model({"rgb": tf.concat([weak["rgb"], weak["rgb"]], 0)}, training=True)
    for w, value in zip(model.weights, weights_before):
        w.assign(value)                                   # undo the BN moving updates
    target = tf.argmax(main["logits"][L:], -1, output_type=tf.int32)

    def ce(logits):
        return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=target, logits=logits)))

    logs = {k: float(v) for k, v in fw.train_step((inputs_l, labels), weak).items()}
    supervised = float(fw.supervised_loss(labels, {"logits": main["logits"][:L]}))
    assert logs["supervised_loss"] == pytest.approx(supervised, rel=1e-4)
    assert logs["fp_loss"] == pytest.approx(ce(main["logits"][L:]), rel=1e-4)
    assert logs["strong1_loss"] == pytest.approx(ce(strong["logits"][:U]), rel=1e-4)
    assert logs["strong2_loss"] == pytest.approx(ce(strong["logits"][U:]), rel=1e-4)
    assert logs["mask_ratio"] == 1.0
    assert logs["loss"] == pytest.approx(
        0.5 * (supervised + 0.25 * (logs["strong1_loss"] + logs["strong2_loss"])
               + 0.5 * logs["fp_loss"]), rel=1e-5)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(weights_before,
                                                                model.trainable_weights))


def test_the_fp_stream_decodes_channel_dropped_features():
    """As above but with fp_dropout 0.9: the FP loss is no longer the clean predictions' own
    CE (the strong views still are plain forwards of u)."""
    fw = make(pseudo_threshold=0.0, fp_dropout=0.9, cutmix_prob=0.0, strong_jitter_prob=0.0,
              strong_grayscale_prob=0.0, strong_blur_prob=0.0)
    (inputs_l, labels), weak = batches(["rgb"])
    weights_before = [w.numpy() for w in fw.model.weights]
    main = fw.model({"rgb": tf.concat([inputs_l["rgb"], weak["rgb"]], 0)}, training=True)
    for w, value in zip(fw.model.weights, weights_before):
        w.assign(value)
    target = tf.argmax(main["logits"][L:], -1, output_type=tf.int32)
    clean = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=target, logits=main["logits"][L:])))
    logs = fw.train_step((inputs_l, labels), weak)
    assert abs(float(logs["fp_loss"]) - clean) > 0.01


def test_the_threshold_leaves_unconfident_pixels_out_and_the_mask_ratio_says_so():
    fw = make(pseudo_threshold=1.0)                      # nothing is that sure
    logs = fw.train_step(*batches(["rgb"]))
    assert float(logs["mask_ratio"]) == 0.0
    assert float(logs["strong1_loss"]) == float(logs["strong2_loss"]) == 0.0
    assert float(logs["fp_loss"]) == 0.0
    assert float(logs["loss"]) == pytest.approx(0.5 * float(logs["supervised_loss"]))


# --- through the trainer -----------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


def _variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def test_deeplab_trains_through_train_and_a_killed_run_resumes_to_the_same_weights(
        tmp_path, records, capsys):
    """Every batch is the 8 records in order (no shuffle, scale, flip or crop offset), so the
    run is the same whatever the stream seed; a run stopped after its step-1 checkpoint
    (what a kill leaves) and resumed must end at step 2 with the uninterrupted run's
    tensors: model, BN statistics, optimizer slots and step (the schedule and the seeds)."""
    keys = dict(framework="unimatch", modalities=["rgb"], unlabeled_data=records,
                batch_size=8, unlabeled_batch_size=8, shuffle_buffer=1, max_iteration=2,
                save_step=1, skip_step=1, summary_step=0, keep_checkpoints=5,
                pseudo_threshold=0.0, learning_rate=0.01)
    folder = train(tiny_config(tmp_path / "full", records, TINY_DEEPLAB, **keys))
    out = capsys.readouterr().out
    assert "strong1_loss" in out and "fp_loss" in out and "mask_ratio 1" in out
    killed = tmp_path / "killed" / "ckpt"
    killed.mkdir(parents=True)
    for name in os.listdir(folder):
        if name.startswith("ckpt-1."):
            shutil.copy(os.path.join(folder, name), killed / name)
    tf.compat.v1.train.update_checkpoint_state(str(killed), str(killed / "ckpt-1"))
    resumed = train(tiny_config(tmp_path / "killed", records, TINY_DEEPLAB, **keys))
    assert "step 2/2" in capsys.readouterr().out
    full, again = (_variables(os.path.join(f, "ckpt-2")) for f in (folder, resumed))
    assert full.keys() == again.keys() and len(full) > 50
    for name in full:
        np.testing.assert_allclose(again[name], full[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    first = _variables(os.path.join(folder, "ckpt-1"))
    assert any(not np.array_equal(first[n], full[n]) for n in full if "optimizer" in n)
    model = restore_eval_model(tiny_config(tmp_path / "full", records, TINY_DEEPLAB, **keys))
    logits = model({"rgb": np.ones((1, H, W, 3), "float32")}, training=False)["logits"]
    assert tuple(logits.shape) == (1, H, W, 2) and np.all(np.isfinite(logits))


def test_linearfusion_trains_through_train_on_two_replicas(tmp_path, records, capsys):
    config = tiny_config(tmp_path, records, {"model": "linearfusion", "backbone": "tiny",
                                             "decoder_dim": 8},
                         framework="unimatch", modalities=["rgb", "depth"],
                         unlabeled_data=records, strategy="mirrored", max_iteration=2,
                         skip_step=1, summary_step=0, pseudo_threshold=0.0)
    folder = train(config)
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"step \d/2  loss ([0-9.e+-]+)", out)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-2")
