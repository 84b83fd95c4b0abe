"""Trainer, supervised framework, losses, schedules, stage-2 init, non-finite stop."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.config import config_from_dict
from ssma_tf.errors import ConfigError
from ssma_tf.frameworks.losses import segmentation_loss, supervised_loss
from ssma_tf.models.factory import build_model
from ssma_tf.optim import WarmupPoly, split_variables
from ssma_tf.training import checkpoints
from ssma_tf.training.checkpoints import restore_eval_model
from ssma_tf.training.trainer import NonFiniteLossError, train
from trainer_data import tiny_config, write_records


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("data"))


def _losses(text):
    return [float(v) for v in re.findall(r"step \d+/\d+  loss ([0-9.e+-]+)", text)]


def test_segmentation_loss_ignores_and_averages_per_image():
    labels = np.array([[[0, 1], [255, 2]], [[1, 1], [7, 255]]], np.int32)
    logits = tf.random.normal([2, 2, 2, 3], seed=1)
    loss = segmentation_loss(labels, logits, num_classes=3, ignore_label=255,
                             global_batch_size=4)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.where(labels < 3, labels, 0), logits=logits).numpy()
    expected = (ce[0][[0, 0, 1], [0, 1, 1]].mean() + ce[1][0].mean()) / 4
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    all_ignored = np.full((1, 2, 2), 255, np.int32)
    assert float(segmentation_loss(all_ignored, logits[:1], num_classes=3,
                                   global_batch_size=1)) == 0.0


def test_ohem_keeps_hard_pixels_or_min_kept():
    labels = np.zeros((1, 1, 4), np.int32)
    logits = np.zeros((1, 1, 4, 2), np.float32)
    logits[0, 0, :, 0] = [5.0, 4.0, -1.0, -2.0]     # two easy, two hard pixels
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy()
    hard = segmentation_loss(labels, logits, num_classes=2, global_batch_size=1, ohem=(0.7, 1))
    np.testing.assert_allclose(float(hard), ce[0, 0, 2:].mean(), rtol=1e-5)
    # min_kept 3: threshold rises to the 3rd smallest probability
    three = segmentation_loss(labels, logits, num_classes=2, global_batch_size=1, ohem=(0.7, 3))
    np.testing.assert_allclose(float(three), ce[0, 0, 1:].mean(), rtol=1e-5)
    everything = segmentation_loss(labels, logits, num_classes=2, global_batch_size=1,
                                   ohem=(0.7, 100))
    np.testing.assert_allclose(float(everything), ce.mean(), rtol=1e-5)


def test_supervised_loss_weights_outputs():
    labels = np.zeros((1, 2, 2), np.int32)
    a, b = tf.random.normal([1, 2, 2, 2], seed=2), tf.random.normal([1, 2, 2, 2], seed=3)
    kw = dict(num_classes=2, ignore_label=255, global_batch_size=1)
    total = supervised_loss(labels, {"logits": a, "aux1": b, "x": a}, {"logits": 1.0, "aux1": 0.6},
                            **kw)
    expected = segmentation_loss(labels, a, **kw) + 0.6 * segmentation_loss(labels, b, **kw)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)


def test_warmup_poly_schedule():
    schedule = WarmupPoly(1e-3, 100, power=1.0, end_lr=1e-4, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(9)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert float(schedule(100)) == pytest.approx(1e-4)
    assert float(schedule(500)) == pytest.approx(1e-4)


def test_variable_groups_and_frozen_experts(tmp_path, records):
    config = tiny_config(tmp_path, records, model="SSMA", modalities=["rgb", "depth"],
                         stage="finetune")
    groups = split_variables(build_model(config, {"rgb": 3, "depth": 1}))
    assert set(groups) == {"encoder", "norm", "decoder"}
    assert all("gamma" in v.path or "beta" in v.path for v in groups["norm"])
    frozen = build_model(config.replace(stage="fusion"), {"rgb": 3, "depth": 1})
    assert set(split_variables(frozen)) == {"decoder"}
    assert not frozen.get_layer("expert_rgb").trainable
    fusion = build_model(config_from_dict({"model": "linearfusion", "num_classes": 2}),
                         {"rgb": 3, "depth": 1})
    groups = split_variables(fusion)  # the MiT encoder is a layer, not a sub-model
    assert set(groups) == {"encoder", "norm", "decoder"}
    assert all("norm" in v.path for v in groups["norm"])


def test_training_reduces_loss_and_writes_run_info(tmp_path, records, capsys):
    config = tiny_config(tmp_path, records, max_iteration=30, skip_step=5, save_step=10,
                         summary_step=10, lr_multipliers={"encoder": 1.0, "decoder": 2.0})
    folder = train(config)
    losses = _losses(capsys.readouterr().out)
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-30")
    info = json.load(open(os.path.join(folder, "run_info.json")))
    assert info["config"]["max_iteration"] == 30 and info["versions"]["tensorflow"]
    assert info["modalities"]["rgb"]["encoding"] == "color" and "git_sha" in info
    events = os.listdir(os.path.join(folder, "train"))
    assert events and events[0].startswith("events.out.tfevents")
    assert not os.path.exists(os.path.join(folder, "best"))      # eval_step 0: no validation
    model = restore_eval_model(config)
    trained = tf.train.load_checkpoint(folder)
    assert model.count_params() > 0 and trained.get_variable_to_shape_map()


def test_progress_line_format(tmp_path, records, capsys):
    train(tiny_config(tmp_path, records, max_iteration=2, skip_step=2, summary_step=0))
    line = capsys.readouterr().out.splitlines()[0]
    assert re.match(r"step 2/2  loss [0-9.]+  learning_rate [0-9.e-]+  [0-9.]+ img/s  ETA 0:00:00",
                    line)


def test_sup_only_steps_run_the_supervised_step_first(tmp_path, records, capsys):
    train(tiny_config(tmp_path, records, framework="mean_teacher", unlabeled_data=records,
                      sup_only_steps=2, max_iteration=3, skip_step=1, summary_step=0))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(lines) == 3
    assert all("consistency_loss" not in line for line in lines[:2])
    assert "consistency_loss" in lines[2]


def test_adapnet_crop_must_divide_by_16(tmp_path, records):
    with pytest.raises(ConfigError, match=r"key 'width' \(72\) must be a multiple of 16 for "
                                          "AdapNet_pp"):
        train(tiny_config(tmp_path, records, width=72))
    assert not (tmp_path / "ckpt").exists()


def test_non_finite_loss_stops_without_saving_bad_state(tmp_path, records):
    config = tiny_config(tmp_path, records, max_iteration=30, save_step=1, summary_step=0,
                         learning_rate=1e30, optimizer="sgd")
    bad = r"non-finite loss \((nan|inf)\) at step (\d+)"
    with pytest.raises(NonFiniteLossError, match=bad) as err:
        train(config)
    bad_step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    latest = tf.train.latest_checkpoint(config.checkpoint)
    saved = int(latest.rsplit("-", 1)[1]) if latest else 0
    assert saved == bad_step - 1


def test_missing_required_keys(tmp_path, records):
    with pytest.raises(ConfigError, match="key 'train_data' is required"):
        train(tiny_config(tmp_path, records, train_data=None))
    with pytest.raises(ConfigError, match="batch_size.*multiple of the 2 replicas"):
        train(tiny_config(tmp_path, records, strategy="mirrored", batch_size=3))


def _expert(tmp_path, records, modality, **changes):
    config = tiny_config(tmp_path, records, modalities=[modality], max_iteration=2,
                         summary_step=0, checkpoint=str(tmp_path / f"expert_{modality}"), **changes)
    train(config)
    return config


def test_stage2_initialises_frozen_experts_from_stage1(tmp_path, records):
    rgb = _expert(tmp_path, records, "rgb")
    depth = _expert(tmp_path, records, "depth")
    ssma = tiny_config(tmp_path, records, model="SSMA", modalities=["rgb", "depth"],
                       checkpoint1=rgb.checkpoint, checkpoint2=depth.checkpoint,
                       checkpoint=str(tmp_path / "ssma"), max_iteration=2, summary_step=0)
    assert ssma.stage == "fusion"
    train(ssma)
    fused = restore_eval_model(ssma)
    for config, modality in ((rgb, "rgb"), (depth, "depth")):
        encoder = restore_eval_model(config).get_layer("encoder")
        for a, b in zip(encoder.get_weights(), fused.get_layer(f"expert_{modality}").get_weights()):
            np.testing.assert_array_equal(a, b)        # copied, then frozen
    # stage 3: finetune everything from the stage-2 checkpoint
    finetune = ssma.replace(stage="finetune", init_checkpoint=ssma.checkpoint,
                            checkpoint=str(tmp_path / "finetune"), learning_rate=1e-4)
    train(finetune)
    changed = restore_eval_model(finetune).get_layer("expert_rgb").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(
        changed, fused.get_layer("expert_rgb").get_weights()))

    with pytest.raises(ConfigError, match="key 'checkpoint2' is required"):
        train(ssma.replace(checkpoint2=None, checkpoint=str(tmp_path / "s2")))
    with pytest.raises(ConfigError, match=r"key 'checkpoint2': no checkpoint at .*nowhere"):
        train(ssma.replace(checkpoint2=str(tmp_path / "nowhere"), checkpoint=str(tmp_path / "s3")))
    with pytest.raises(ConfigError, match=r"key 'checkpoint2'.*expected the AdapNet_pp expert "
                                          r"of \['depth'\]"):
        train(ssma.replace(checkpoint2=rgb.checkpoint, checkpoint=str(tmp_path / "s4")))


def test_unlabeled_stream_draws_its_own_augmentation(tmp_path, records):
    """Same records in both streams: the crops and flips must still differ (independent seeds),
    else every unlabeled row would share its labeled row's geometry."""
    from ssma_tf.frameworks import get_framework
    from ssma_tf.training.trainer import _datasets
    config = tiny_config(tmp_path, records, framework="mean_teacher", unlabeled_data=records,
                         shuffle_buffer=1, scale_min=0.5, scale_max=2.0, flip=True)
    framework = get_framework("mean_teacher")(config, None)
    labeled, unlabeled = _datasets(config, tf.distribute.get_strategy(), framework, 0)
    (inputs_l, _), inputs_u = next(labeled), next(unlabeled)
    assert inputs_l["rgb"].shape == inputs_u["rgb"].shape
    assert not np.allclose(inputs_l["rgb"].numpy(), inputs_u["rgb"].numpy())


# --- per-pixel weights and image-level outputs (frameworks/losses.py) ---------------------

def test_pixel_weights_scale_each_pixel_and_keep_the_kept_pixel_divisor():
    labels = np.array([[[0, 1], [255, 2]], [[1, 1], [0, 2]]], np.int32)
    logits = tf.random.normal([2, 2, 2, 3], seed=4)
    weights = np.array([[[1.0, 0.5], [9.0, 2.0]], [[0.0, 1.0], [0.25, 3.0]]], np.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.where(labels < 3, labels, 0), logits=logits).numpy()
    # image 0: 3 valid pixels (the 255 one and its weight 9 do not count), image 1: 4
    expected = ((1.0 * ce[0, 0, 0] + 0.5 * ce[0, 0, 1] + 2.0 * ce[0, 1, 1]) / 3
                + (0.0 * ce[1, 0, 0] + ce[1, 0, 1] + 0.25 * ce[1, 1, 0] + 3.0 * ce[1, 1, 1]) / 4
                ) / 2
    kw = {"num_classes": 3, "ignore_label": 255, "global_batch_size": 2}
    weighted = segmentation_loss(labels, logits, pixel_weights=weights, **kw)
    np.testing.assert_allclose(float(weighted), expected, rtol=1e-5)
    ones = segmentation_loss(labels, logits, pixel_weights=np.ones_like(weights), **kw)
    np.testing.assert_allclose(float(ones), float(segmentation_loss(labels, logits, **kw)),
                               rtol=1e-6)
    total = supervised_loss(labels, {"logits": logits, "aux": logits},
                            {"logits": 1.0, "aux": 0.5}, pixel_weights=weights, **kw)
    np.testing.assert_allclose(float(total), 1.5 * expected, rtol=1e-5)


def _bce(targets, logits):
    p = 1 / (1 + np.exp(-logits))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def test_image_level_output_gets_multilabel_bce_on_the_present_classes():
    from ssma_tf.frameworks.losses import present_classes
    labels = np.array([[[0, 2], [2, 255]], [[1, 1], [7, 255]]], np.int32)   # 7: >= classes
    np.testing.assert_array_equal(present_classes(labels, 3, 255).numpy(),
                                  [[1, 0, 1], [0, 1, 0]])
    pixel = tf.random.normal([2, 2, 2, 3], seed=5)
    cls = np.array([[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0]], np.float32)
    kw = {"num_classes": 3, "ignore_label": 255, "global_batch_size": 4}
    outputs = {"logits": pixel, "cls": tf.constant(cls), "feature_decoder": tf.zeros([2, 1])}
    weights = {"logits": 1.0, "cls": 0.4}
    total = supervised_loss(labels, outputs, weights, kinds={"cls": "multilabel_bce"}, **kw)
    bce = _bce(np.array([[1, 0, 1], [0, 1, 0]], np.float32), cls).mean(axis=1).sum() / 4
    np.testing.assert_allclose(float(total),
                               float(segmentation_loss(labels, pixel, **kw)) + 0.4 * bce,
                               rtol=1e-5)
    given = np.array([[0, 1, 1], [1, 1, 1]], np.float32)       # a given target wins
    total = supervised_loss({"logits": labels, "cls": given}, outputs, {"cls": 1.0},
                            kinds={"cls": "multilabel_bce"}, **kw)
    np.testing.assert_allclose(float(total), _bce(given, cls).mean(axis=1).sum() / 4,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss kind 'dice'"):
        supervised_loss(labels, outputs, weights, kinds={"cls": "dice"}, **kw)


# --- optimizer factory (ssma_tf/optim) ----------------------------------------------------

def test_second_network_gets_its_own_optimizer_settings(tmp_path, records):
    import keras

    from ssma_tf.frameworks.build import build_framework
    from ssma_tf.optim import GroupOptimizer, WarmupConstant
    config = tiny_config(tmp_path, records, learning_rate=2e-3, adam_epsilon=1e-6,
                         max_iteration=100, power=1.0, warmup_steps=0)
    framework = build_framework(config, channels={"rgb": 3})
    discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="head")])
    d_opt = framework.make_optimizer(discriminator, name="discriminator", learning_rate=1e-4,
                                     beta_1=0.5, beta_2=0.99, schedule="constant")
    inner = d_opt.inner()
    assert isinstance(inner, keras.optimizers.Adam) and d_opt.name == "discriminator"
    assert (inner.beta_1, inner.beta_2, inner.epsilon) == (0.5, 0.99, 1e-6)
    assert isinstance(d_opt.schedules["decoder"], WarmupConstant)
    assert float(d_opt.schedules["decoder"](80)) == pytest.approx(1e-4)
    assert float(d_opt.learning_rate()) == pytest.approx(1e-4)
    main = framework.optimizer
    assert (main.inner().beta_1, main.inner().beta_2, main.inner().epsilon) == (0.9, 0.999, 1e-6)
    assert float(main.schedules["decoder"](50)) == pytest.approx(1e-3)     # poly, power 1
    assert main.settings["learning_rate"] == 2e-3 and main.settings["schedule"] == "poly"
    sgd = GroupOptimizer(config, discriminator, optimizer="sgd", weight_decay=1e-4).inner()
    assert sgd.momentum == 0.9 and sgd.weight_decay == 1e-4        # config's momentum key
    sgd = GroupOptimizer(config.replace(momentum=0.5), discriminator, optimizer="sgd").inner()
    assert sgd.momentum == 0.5
    assert GroupOptimizer(config.replace(adam_epsilon=None), discriminator).inner().epsilon \
        == 1e-8                                                     # the default, as before
    scaled = GroupOptimizer(config.replace(mixed_precision="mixed_float16"), discriminator,
                            learning_rate=3e-4)
    assert isinstance(scaled.optimizers["decoder"], keras.optimizers.LossScaleOptimizer)
    assert float(scaled.learning_rate()) == pytest.approx(3e-4)
    with pytest.raises(TypeError, match="unknown optimizer setting 'lr'"):
        GroupOptimizer(config, discriminator, lr=1.0)
    with pytest.raises(ValueError, match="schedule must be one of poly, constant, cosine"):
        GroupOptimizer(config, discriminator, schedule="step")


# --- every network initialised --------------------------------------------------------------

def test_init_checkpoint_initialises_both_cps_networks(tmp_path, records):
    from ssma_tf.frameworks.build import build_framework
    from ssma_tf.training.trainer import initialise
    source = tiny_config(tmp_path, records)
    supervised = build_framework(source, channels={"rgb": 3})    # saved as train() saves
    tf.train.Checkpoint(**checkpoints.trackable(supervised.checkpoint_items())).save(
        str(tmp_path / "supervised" / "ckpt"))
    trained = supervised.model.get_weights()
    cps = source.replace(framework="cps", unlabeled_data=records,
                         init_checkpoint=str(tmp_path / "supervised"))
    framework = build_framework(cps, channels={"rgb": 3})
    networks = [model for model, _ in framework.networks()]
    assert len(networks) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(networks[1].get_weights(), trained))
    initialise(framework, cps)
    for model in networks:
        for a, b in zip(model.get_weights(), trained):
            np.testing.assert_array_equal(a, b)


# --- logged values reach the host at log points only -----------------------------------------

def test_nan_loss_raises_at_the_next_log_point_naming_the_interval(tmp_path, records,
                                                                  monkeypatch):
    from ssma_tf.frameworks.supervised import Supervised
    step_fn = Supervised.train_step

    def nan_from_step_5(self, labeled, unlabeled=None):
        logs = step_fn(self, labeled, unlabeled)       # self.step: the steps done before
        return {**logs, "loss": tf.where(self.step >= 4, np.nan, logs["loss"])}
    monkeypatch.setattr(Supervised, "train_step", nan_from_step_5)
    config = tiny_config(tmp_path, records, max_iteration=20, skip_step=3, save_step=100,
                         summary_step=0)
    with pytest.raises(NonFiniteLossError,
                       match=r"non-finite loss \(nan\) between steps 4 and 6 .*last "
                             r"checkpoint: none"):
        train(config)
    assert tf.train.latest_checkpoint(config.checkpoint) is None


# --- validation during training and the best checkpoint ----------------------------------------

def _scripted_scores(monkeypatch, mious):
    """validation.score returning the real scores with mIoU replaced by `mious`, in order;
    returns the list of (real result) it scored."""
    from ssma_tf.training import validation
    real_score = getattr(validation.score, "real", validation.score)
    scored, script = [], iter(mious)

    def scripted(model, dataset, config):
        result = real_score(model, dataset, config)
        scored.append(result)
        return {**result, "miou": next(script)}
    scripted.real = real_score
    monkeypatch.setattr(validation, "score", scripted)
    return scored


def test_validation_keeps_the_best_checkpoint_and_a_resumed_run_respects_it(
        tmp_path, records, monkeypatch, capsys):
    from ssma_tf.data.pipeline import eval_dataset
    from ssma_tf.evaluation.evaluator import evaluate
    from ssma_tf.training.validation import read_best
    config = tiny_config(tmp_path, records, val_data=records, eval_step=2, max_iteration=8,
                         skip_step=2, save_step=4, summary_step=0)
    scored = _scripted_scores(monkeypatch, [0.3, 0.7, 0.5, 0.6])
    folder = train(config)
    best = os.path.join(folder, "best")
    assert checkpoints_in(best) == ["ckpt-4"]
    assert read_best(best) == {"step": 4, "miou": 0.7, "metric": "miou", "value": 0.7}
    assert os.path.isfile(os.path.join(best, "run_info.json"))
    out = capsys.readouterr().out
    assert re.search(r"step 4/8  loss \S+  learning_rate \S+  val_miou 0\.7  val_pixel_accuracy",
                     out)
    # evaluate / export read `<run>/best` like any checkpoint folder: the step-4 weights
    assert checkpoints.find_checkpoint(best).endswith("ckpt-4")
    model = restore_eval_model(config, best)
    again = evaluate(model, eval_dataset(records, modalities=["rgb"], batch_size=1),
                     num_classes=2, ignore_label=255)
    assert again["confusion_matrix"] == scored[1]["confusion_matrix"]
    assert again["confusion_matrix"] != scored[0]["confusion_matrix"]
    # resumed: 0.65 at step 10 is below the stored 0.7, 0.9 at step 12 is above
    _scripted_scores(monkeypatch, [0.65, 0.9])
    train(config.replace(max_iteration=12))
    assert checkpoints_in(best) == ["ckpt-12"] and read_best(best)["miou"] == 0.9
    with pytest.raises(ConfigError, match="key 'val_data' is required with eval_step 2"):
        train(config.replace(val_data=None, checkpoint=str(tmp_path / "other")))


def checkpoints_in(folder):
    return sorted(name[:-len(".index")] for name in os.listdir(folder)
                  if name.endswith(".index"))
