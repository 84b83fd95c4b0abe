"""The original AdapNet++ / SSMA TF1 checkpoints: generated with exactly the original names and
shapes (tests/tf1_originals.py; small widths), imported, and compared with the original graph's
logits on the same image; the ImageNet init from its published index; training from
`intialize:`; convert -> evaluate / export / predict."""

import os

import numpy as np
import pytest
import tensorflow as tf

import evaluate
import export
import predict
from ssma_tf.config import config_from_dict, load_config
from ssma_tf.data.normalize import channel_affine
from ssma_tf.data.schema import ModalitySpec
from ssma_tf.errors import ConfigError, InputError
from ssma_tf.models.factory import build_model
from ssma_tf.models.layers import BN_EPSILON
from ssma_tf.training import checkpoints, trainer
from ssma_tf.training.converted import convert
from ssma_tf.training.run_info import read_run_info
from ssma_tf.weights import __main__ as weights_cli
from ssma_tf.weights.assign import variables_by_path
from ssma_tf.weights.importers import import_weights
from ssma_tf.weights.readers import Source, read_source
from ssma_tf.weights.tf1_adapnet import fold_input_bn, input_affine, map_adapnet
from tf1_originals import (
    adam_snapshot_names,
    adapnet_shapes,
    original_logits,
    original_ssma_logits,
    random_values,
    save_tf1,
    ssma_shapes,
)
from trainer_data import write_records

WIDTH = 0.0625
V2 = "resnet_v2_50/"
COLOR = ModalitySpec("rgb", "color", 3, "uint8")
JET = ModalitySpec("depth", "image", 3, "uint8")
INDEX = os.path.join(os.path.dirname(__file__), "data", "adapnet_pp_init_index.tsv")


def adapnet_config(classes=3, **keys):
    return config_from_dict({"model": "AdapNet_pp", "num_classes": classes,
                             "width_multiplier": WIDTH, **keys}, "test")


def ours(x_bgr, spec):
    """Our model input for the original's BGR raw image: RGB, normalised per `spec`."""
    scale, bias = channel_affine(spec)
    return x_bgr[..., ::-1] * np.float32(scale) + np.float32(bias)


def image(seed, batch=2, height=32, width=64):
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3)).astype(
        np.float32)


@pytest.fixture(scope="module")
def adapnet_tf1(tmp_path_factory):
    """(prefix, tensors) of an original-layout AdapNet++ checkpoint, 3 classes."""
    tensors = random_values(adapnet_shapes(WIDTH, classes=3))
    prefix = str(tmp_path_factory.mktemp("tf1") / "model.ckpt-100")
    return save_tf1(prefix, tensors), tensors


def imported_adapnet(prefix, config=None, options=None, new_head=False):
    config = config or adapnet_config()
    model = build_model(config, {"rgb": 3})
    _, report = import_weights(model, read_source(prefix), config, options or {},
                               new_head=new_head)
    return model, report


def test_original_tables_match_the_published_counts():
    # the original graphs at 12 classes: 388 / 747 model variables, 859 in a train.py snapshot
    adapnet, ssma = adapnet_shapes(), ssma_shapes()
    assert len(adapnet) == 388 and sum(int(np.prod(s)) for s in adapnet.values()) == 30_204_492
    assert len(ssma) == 747 and sum(int(np.prod(s)) for s in ssma.values()) == 56_285_688
    assert len(adapnet) + len(adam_snapshot_names(adapnet, V2)) == 859


def test_full_size_mapping_covers_every_original_name_and_every_variable():
    shapes = adapnet_shapes(classes=12)
    zeros = {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}
    config = config_from_dict({"model": "AdapNet_pp", "num_classes": 12}, "test")
    model = build_model(config, {"rgb": 3})
    mapping = map_adapnet(Source("x", "tf_checkpoint", zeros), model, config, {})
    variables = variables_by_path(model)
    assert mapping.used == set(shapes)
    assert set(mapping.values) == set(variables) == mapping.expected
    bad = [(p, v.shape, variables[p].shape) for p, v in mapping.values.items()
           if tuple(v.shape) != tuple(variables[p].shape)]
    assert not bad


@pytest.mark.parametrize("prefix", ["resnet_v2_50/", "resnet_v1_50/"])
def test_imported_adapnet_gives_the_original_logits(tmp_path, prefix):
    tensors = random_values(adapnet_shapes(WIDTH, classes=3, scope=prefix), seed=3)
    model, report = imported_adapnet(save_tf1(str(tmp_path / "model.ckpt"), tensors))
    assert report.unused == [] and report.lacking == []
    x = image(1)
    reference = original_logits(tensors, x, scope=prefix)
    logits = model({"rgb": ours(x, COLOR)}, training=False)["logits"].numpy()
    assert np.abs(reference).max() > 0.05
    np.testing.assert_allclose(logits, reference, atol=1e-4)


def test_layout_rules_tensor_by_tensor(adapnet_tf1):
    prefix, t = adapnet_tf1
    model, _ = imported_adapnet(prefix)
    v = {path: var.numpy() for path, var in variables_by_path(model).items()}
    unit = V2 + "block{}/unit_{}/bottleneck_v1/"
    # conv3/BatchNorm of a unit is the next unit's pre-activation / the block's closing BN
    np.testing.assert_array_equal(v["block1_unit2_preact_bn/gamma"],
                                  t[unit.format(1, 1) + "conv3/BatchNorm/gamma"])
    np.testing.assert_array_equal(v["block1_out_bn/moving_variance"],
                                  t[unit.format(1, 3) + "conv3/BatchNorm/moving_variance"])
    np.testing.assert_array_equal(v["block4_unit1_preact_bn/beta"],
                                  t[unit.format(3, 6) + "conv3/BatchNorm/beta"])
    # a multiscale kernel is split along its output channels; block 4's stays whole
    kernel = t[unit.format(3, 4) + "conv2/weights"]
    half = kernel.shape[-1] // 2
    np.testing.assert_array_equal(v["block3_unit4_conv2_a/kernel"], kernel[..., :half])
    np.testing.assert_array_equal(v["block3_unit4_conv2_b/kernel"], kernel[..., half:])
    np.testing.assert_array_equal(v["block4_unit2_conv2/kernel"],
                                  t[unit.format(4, 2) + "conv2/weights"])
    # transposed kernels as they are; conv1 reversed to RGB
    np.testing.assert_array_equal(v["up3/kernel"], t[V2 + "conv5/weights"])
    np.testing.assert_array_equal(v["stem_conv/kernel"], t[V2 + "conv1/weights"][:, :, ::-1])


def test_input_bn_fold_equals_bn_on_bgr_raw_pixels():
    rng = np.random.default_rng(0)
    vectors = {"gamma": rng.uniform(0.5, 2, 3), "beta": rng.normal(0, 1, 3),
               "moving_mean": rng.uniform(90, 130, 3), "moving_variance": rng.uniform(2e3, 5e3, 3)}
    x_bgr = rng.integers(0, 256, (5, 7, 3)).astype(np.float64)

    def bn(x, p):
        return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + BN_EPSILON) * p["gamma"] \
            + p["beta"]

    a, b = input_affine(COLOR)
    np.testing.assert_allclose(x_bgr[..., ::-1], a * ours(x_bgr, COLOR) + b, atol=1e-3)
    folded = fold_input_bn(vectors, a, b)
    np.testing.assert_allclose(bn(ours(x_bgr, COLOR), folded), bn(x_bgr, vectors)[..., ::-1],
                               atol=1e-4)


def test_training_snapshot_leaves_adam_slots_unused(tmp_path):
    shapes = adapnet_shapes(WIDTH, classes=3)
    extra = adam_snapshot_names(shapes, V2)
    prefix = save_tf1(str(tmp_path / "model.ckpt-7"), random_values({**shapes, **extra}))
    _, report = imported_adapnet(prefix)
    assert report.unused == sorted(extra) and report.lacking == []


def scaled_init_shapes(width):
    """The ImageNet init's names (the published index) with channels scaled by `width`."""
    shapes = {}
    with open(INDEX) as handle:
        next(handle)
        for line in handle:
            name, shape = line.rstrip("\n").split("\t")
            dims = [int(d) for d in shape.strip("[]").split(",")]
            if len(dims) == 4:
                dims = dims[:2] + [d if d == 3 else max(1, round(d * width)) for d in dims[2:]]
            else:
                dims = [max(1, round(dims[0] * width))]
            shapes[name] = dims
    return shapes


def test_imagenet_init_maps_what_the_original_used_and_leaves_the_shortcut_bns(tmp_path):
    shapes = scaled_init_shapes(WIDTH)
    assert len(shapes) == 265 and all(name.endswith(":0") for name in shapes)
    tensors = random_values(shapes)
    model, report = imported_adapnet(save_tf1(str(tmp_path / "AdapNet_pp_init.ckpt"), tensors))
    shortcut_bns = sorted(n for n in shapes if "shortcut/BatchNorm" in n)
    assert len(shortcut_bns) == 16 and report.unused == shortcut_bns
    lacking = set(report.lacking)
    assert {"input_bn/gamma", "easpp_project/kernel", "up3/kernel"} <= lacking
    assert not any(p.startswith(("block", "stem")) for p in lacking)
    v = variables_by_path(model)
    closing = V2 + "block2/unit_2/bottleneck_v1/conv3/BatchNorm/gamma:0"
    np.testing.assert_array_equal(v["block2_unit3_preact_bn/gamma"].numpy(), tensors[closing])
    assert any("ImageNet backbone" in note for note in report.notes)


def test_class_count_mismatch_names_both_sides_unless_new_head(adapnet_tf1):
    with pytest.raises(InputError, match=r"resnet_v2_50/conv78/weights has shape \(1, 1, 16, 3\)"
                                         r" but pre_logits/kernel has \(1, 1, 16, 4\)"):
        imported_adapnet(adapnet_tf1[0], adapnet_config(classes=4))
    _, report = imported_adapnet(adapnet_tf1[0], adapnet_config(classes=4), new_head=True)
    assert {"pre_logits/kernel", "up3/kernel", "aux1_conv/kernel", "up3_bn/gamma"} <= set(
        report.new_head)
    assert "resnet_v2_50/conv5/weights" in report.unused


def test_missing_tensor_and_unit_count_errors(tmp_path, adapnet_tf1):
    tensors = dict(adapnet_tf1[1])
    del tensors[V2 + "conv10/weights"]
    prefix = save_tf1(str(tmp_path / "partial.ckpt"), tensors)
    with pytest.raises(InputError, match="lacks resnet_v2_50/conv10/weights for "
                                         "easpp_project/kernel"):
        imported_adapnet(prefix)
    with pytest.raises(InputError, match=r"\(3, 4, 6, 3\) units per block, the model "
                                         r"\(backbone_units\) \(3, 4, 6, 2\)"):
        imported_adapnet(adapnet_tf1[0], adapnet_config(backbone_units=[3, 4, 6, 2]))
    with pytest.raises(InputError, match="conv0/BatchNorm: the checkpoint normalises its input "
                                         "with a BatchNorm; build the model with input_bn: true"):
        imported_adapnet(adapnet_tf1[0], adapnet_config(input_bn=False))


@pytest.fixture(scope="module")
def ssma_tf1(tmp_path_factory):
    tensors = random_values(ssma_shapes(WIDTH, classes=3), seed=5)
    prefix = str(tmp_path_factory.mktemp("tf1ssma") / "model.ckpt-9")
    return save_tf1(prefix, tensors), tensors


def ssma_config(**keys):
    return config_from_dict({"model": "SSMA", "num_classes": 3, "width_multiplier": WIDTH,
                             "modalities": ["rgb", "depth"], **keys}, "test")


@pytest.mark.parametrize("prefix", ["resnet_v2_50/", "resnet_v1_50/"])
def test_imported_ssma_gives_the_original_logits(tmp_path, ssma_tf1, prefix):
    prefix_path, tensors = ssma_tf1
    extra = {}
    if prefix != V2:   # the older scope, in a train.py snapshot (Adam slots at the root)
        shapes = ssma_shapes(WIDTH, classes=3, prefix=prefix)
        fusion = {n: s for n, s in shapes.items() if not n.startswith(("rgb/", "depth/"))}
        extra = adam_snapshot_names(fusion, "")
        tensors = random_values({**shapes, **extra}, seed=6)
        prefix_path = save_tf1(str(tmp_path / "model.ckpt-1"), tensors)
    config = ssma_config()
    model = build_model(config, {"rgb": 3, "depth": 3})
    _, report = import_weights(model, read_source(prefix_path), config,
                               {"specs": {"rgb": COLOR, "depth": JET}})
    assert report.unused == sorted(extra) and report.lacking == []
    x1, x2 = image(2), image(3)
    reference = original_ssma_logits(tensors, x1, x2, prefix=prefix)
    logits = model({"rgb": ours(x1, COLOR), "depth": ours(x2, JET)}, training=False)["logits"]
    np.testing.assert_allclose(logits.numpy(), reference, atol=1e-4)


def test_one_channel_depth_expert_takes_the_channel_mean(ssma_tf1):
    prefix, tensors = ssma_tf1
    config = ssma_config()
    model = build_model(config, {"rgb": 3, "depth": 1})
    _, report = import_weights(model, read_source(prefix), config, {})
    expert = {p: v.numpy() for p, v in variables_by_path(model.get_layer("expert_depth")).items()}
    kernel = tensors["depth/" + V2 + "conv1/weights"]
    np.testing.assert_allclose(expert["stem_conv/kernel"], kernel.mean(axis=2, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_allclose(expert["input_bn/gamma"],
                               [tensors["depth/" + V2 + "conv0/BatchNorm/gamma"].mean()],
                               rtol=1e-6)
    assert any("1 input channels" in note for note in report.notes)


def test_ssma_experts_from_two_tf1_adapnet_checkpoints(tmp_path, adapnet_tf1):
    other = random_values(adapnet_shapes(WIDTH, classes=5), seed=9)   # other class count
    second = save_tf1(str(tmp_path / "depth.ckpt"), other)
    config = ssma_config(stage="fusion", checkpoint1=adapnet_tf1[0], checkpoint2=second)
    model = build_model(config, {"rgb": 3, "depth": 3})
    checkpoints.init_experts(model, config)
    for modality, tensors in (("rgb", adapnet_tf1[1]), ("depth", other)):
        expert = variables_by_path(model.get_layer(f"expert_{modality}"))
        np.testing.assert_array_equal(expert["easpp_project/kernel"].numpy(),
                                      tensors[V2 + "conv10/weights"])
        np.testing.assert_array_equal(expert["stem_conv/kernel"].numpy(),
                                      tensors[V2 + "conv1/weights"][:, :, ::-1])


def test_intialize_trains_from_the_tf1_imagenet_init(tmp_path, capsys):
    records = write_records(tmp_path, num=4)
    tensors = random_values(scaled_init_shapes(WIDTH), seed=4)
    os.makedirs(tmp_path / "init_checkpoint")
    init = save_tf1(str(tmp_path / "init_checkpoint" / "AdapNet_pp_init.ckpt"), tensors)
    path = tmp_path / "adapnet_rgb_train.config"     # an original SSMA-format config's keys
    path.write_text(f"model: AdapNet_pp\nmodalities: [rgb]\nnum_classes: 2\n"
                    f"width_multiplier: {WIDTH}\nheight: 32\nwidth: 64\nbatch_size: 2\n"
                    f"intialize: '{init}'\ntrain_data: {records}\nlearning_rate: 1e-12\n"
                    f"checkpoint: {tmp_path / 'run'}\nmax_iteration: 2\nskip_step: 1\n"
                    f"save_step: 2\nflip: false\nphotometric: false\n")
    trainer.train(load_config(str(path)))
    out = capsys.readouterr().out
    assert out.count("importer tf1_adapnet_pp") == 1 and "left unused in the source: 16" in out
    saved = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "run")))
    key = "model_variables/by_path/block3_unit1_conv2.Skernel/.ATTRIBUTES/VARIABLE_VALUE"
    # learning rate 1e-12 (0 is refused): the kernels after two steps are the imported ones
    np.testing.assert_allclose(saved.get_tensor(key),
                               tensors[V2 + "block3/unit_1/bottleneck_v1/conv2/weights:0"],
                               atol=1e-9)


def test_convert_then_evaluate_export_predict(tmp_path, capsys):
    units = (1, 1, 1, 1)     # the original's names, fewer units: a quick end-to-end run
    tensors = random_values(adapnet_shapes(WIDTH, classes=3, units=units))
    source = save_tf1(str(tmp_path / "model.ckpt-3"), tensors)
    records = write_records(tmp_path, num=2, name="test")
    config = tmp_path / "run.config"
    config.write_text(f"model: AdapNet_pp\nnum_classes: 3\nwidth_multiplier: {WIDTH}\n"
                      f"backbone_units: [1, 1, 1, 1]\ntest_data: {records}\n"
                      f"checkpoint: {tmp_path / 'converted'}\n")
    out = str(tmp_path / "converted")
    assert weights_cli.main(["convert", source, "--config", str(config), "--output", out]) == 0
    printed = capsys.readouterr().out
    assert f"matched: {len(tensors)} variables" in printed
    assert "left unused in the source: 0" in printed
    assert weights_cli.main(["convert", source, "--config", str(config), "--output",
                             out, "--override", "num_classes=4"]) == 2
    assert f"error: {source}: resnet_v2_50/conv78/weights has shape" in capsys.readouterr().err
    fresh = build_model(load_config(str(config)), {"rgb": 3})    # the folder as init_checkpoint
    checkpoints.init_from_checkpoint(fresh, out)
    np.testing.assert_array_equal(variables_by_path(fresh)["up3/kernel"].numpy(),
                                  tensors[V2 + "conv5/weights"])
    assert evaluate.main(["--config", str(config), "--output", str(tmp_path / "m.json")]) == 0
    assert os.path.isfile(tmp_path / "m.json")
    assert export.main(["--config", str(config), "--output", str(tmp_path / "served")]) == 0
    assert os.path.isdir(tmp_path / "served" / "1")
    import cv2
    os.makedirs(tmp_path / "images")
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image(0, 1)[0].astype(np.uint8))
    assert predict.main(["--config", str(config), "--input", str(tmp_path / "images"),
                         "--output", str(tmp_path / "pred")]) == 0
    assert os.path.isfile(tmp_path / "pred" / "a_labels.png")


def test_converted_folder_holds_the_eval_item_of_a_mean_teacher(tmp_path, adapnet_tf1):
    config = adapnet_config(framework="mean_teacher")
    convert(adapnet_tf1[0], config, str(tmp_path / "mt"))
    model = checkpoints.restore_eval_model(config, str(tmp_path / "mt"))
    np.testing.assert_array_equal(variables_by_path(model)["up1/kernel"].numpy(),
                                  adapnet_tf1[1][V2 + "conv41/weights"])
    info = read_run_info(str(tmp_path / "mt"))
    assert info["modalities"]["rgb"]["encoding"] == "color"
    assert info["importer"] == "tf1_adapnet_pp" and info["import_report"]["unused"] == []


def test_init_keys_take_any_weight_file_and_name_the_key(tmp_path, adapnet_tf1):
    assert checkpoints.find_checkpoint(adapnet_tf1[0], "init_checkpoint") == adapnet_tf1[0]
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ConfigError, match=r"key 'checkpoint1': .*notes.txt: not a weight file"):
        checkpoints.find_checkpoint(str(tmp_path / "notes.txt"), "checkpoint1")
    with pytest.raises(ConfigError, match="key 'checkpoint': no checkpoint at"):
        checkpoints.find_checkpoint(str(tmp_path / "notes.txt"), "checkpoint")
    model = build_model(adapnet_config(), {"rgb": 3})
    with pytest.raises(ConfigError, match="importing it needs the run's config"):
        checkpoints.init_from_checkpoint(model, adapnet_tf1[0])


def test_inspect_names_the_format_and_the_importer(adapnet_tf1, capsys):
    assert weights_cli.main(["inspect", adapnet_tf1[0], "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "format tf_checkpoint, 388 tensors" in out and "386 more" in out
    assert "fits importer tf1_adapnet_pp: models AdapNet_pp" in out
