"""ResNet weight import: a plain-torch torchvision-layout ResNet (7x7 and deep stem), the
DeepLab-v2 COCO layout and Keras applications' ResNet50/101 .h5 files, each built with
random weights, saved in its own format, imported and compared on the same input."""

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssma_tf.config import config_from_dict
from ssma_tf.errors import InputError
from ssma_tf.models import factory
from ssma_tf.weights.importers import import_weights
from ssma_tf.weights.readers import read_source
from torch_resnet import ResNet

TOLERANCE = 1e-4
TINY = {"backbone_units": [1, 1, 1, 1], "width_multiplier": 0.25}


def build(model, classes=5, modalities=("rgb",), channels=None, **keys):
    config = config_from_dict({"model": model, "num_classes": classes,
                               "modalities": list(modalities), **keys})
    return config, factory.build_model(config, channels)


def import_into(path, config, model, new_head=False, **options):
    """(importer name, Report) of importing the file at `path` into `model`."""
    return import_weights(model, read_source(str(path)), config, options, new_head=new_head)


def save_torch(module, path, drop=(), wrap=None):
    state = {k: v for k, v in module.state_dict().items() if not any(d in k for d in drop)}
    torch.save(wrap(state) if wrap else state, path)
    return path


def torch_input(image):
    return torch.from_numpy(image.transpose(0, 3, 1, 2).copy())


def nhwc(tensor):
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def backbone_output(model, layer):
    encoder = model.get_layer("encoder")
    return keras.Model(encoder.input, encoder.get_layer(layer).output)


def image(height=37, width=45, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(1, height, width, channels)).astype("f4")


def test_deeplabv2_coco_layout_reproduces_the_reference_logits(tmp_path):
    # v1 strides on the 1x1, OS 8 with every block dilated, ceil-mode pool, ASPP-v2 summing
    # branches 0 and 1; saved without num_batches_tracked, as the COCO file
    reference = ResNet(width=0.25, stride_in_1x1=True, ceil_mode=True, strides=(1, 2, 1, 1),
                       dilations=[(1,), (1,), (2,), (4,)], num_classes=5)
    path = save_torch(reference, tmp_path / "resnet101COCO.pth", drop=("num_batches_tracked",))
    config, model = build("deeplabv2", **TINY)
    name, report = import_into(path, config, model)
    assert name == "deeplabv2_coco"
    assert report.unused == [] and report.lacking == []
    x = image(40, 48)   # even sizes: the ceil-mode pool matters
    with torch.no_grad():
        head = reference(torch_input(x))["layer5"]
        expected = F.interpolate(head, size=x.shape[1:3], mode="bilinear", align_corners=True)
    ours = model({"rgb": x}, training=False)["logits"]
    assert np.abs(keras.ops.convert_to_numpy(ours) - nhwc(expected)).max() < TOLERANCE


def test_deeplabv2_coco_head_with_other_classes_needs_a_new_head(tmp_path):
    reference = ResNet(width=0.25, stride_in_1x1=True, num_classes=21)
    path = save_torch(reference, tmp_path / "coco.pth", drop=("num_batches_tracked",))
    config, model = build("deeplabv2", classes=5, **TINY)
    with pytest.raises(InputError, match=r"layer5.conv2d_list.0.\w+ has shape \(21.*"
                                         r"allow a new head"):
        import_into(path, config, model)
    _, report = import_into(path, config, model, new_head=True)
    assert report.new_head == [f"layer5/layer5_conv2d_list_{i}/{v}" for i in range(4)
                               for v in ("bias", "kernel")]
    stem = model.get_layer("encoder").get_layer("conv1").kernel.numpy()
    np.testing.assert_array_equal(stem, reference.conv1.weight.detach().numpy()
                                  .transpose(2, 3, 1, 0))


def test_torchvision_resnet_into_deeplabv3plus_matches_backbone_features(tmp_path):
    # v1.5 (stride on the 3x3), OS 16: layer4 dilated 1 -> 2 would need 2 blocks; with one
    # block the torchvision rule keeps dilation 1 in layer4's first block
    reference = ResNet(width=0.25, strides=(1, 2, 2, 1), fc=True)
    path = save_torch(reference, tmp_path / "resnet50-0676ba61.pth")
    config, model = build("deeplabv3plus", deep_stem=False, **TINY)
    name, report = import_into(path, config, model)
    assert name == "torchvision_resnet"
    assert report.unused == []
    assert any("fc.*" in note for note in report.notes)
    assert all(not p.startswith(("conv1", "bn1", "layer")) for p in report.lacking)
    x = image(41, 50)
    with torch.no_grad():
        expected = nhwc(reference(torch_input(x))["P5"])
    ours = backbone_output(model, "layer4_0_relu")(x, training=False)
    assert np.abs(keras.ops.convert_to_numpy(ours) - expected).max() < TOLERANCE


def test_deep_stem_resnet_into_deeplabv3plus_with_a_module_prefix(tmp_path):
    reference = ResNet(width=0.25, deep_stem=True, strides=(1, 2, 2, 1))
    path = save_torch(reference, tmp_path / "resnet101.pth",
                      wrap=lambda s: {f"module.{k}": v for k, v in s.items()})
    config, model = build("deeplabv3plus", **TINY)    # deep stem is v3plus' default
    name, report = import_into(path, config, model)
    assert name == "deep_stem_resnet" and report.unused == []
    x = image(40, 48)
    with torch.no_grad():
        expected = nhwc(reference(torch_input(x))["P5"])
    ours = backbone_output(model, "layer4_0_relu")(x, training=False)
    assert np.abs(keras.ops.convert_to_numpy(ours) - expected).max() < TOLERANCE


def test_stem_and_depth_mismatches_name_the_config_change(tmp_path):
    path = save_torch(ResNet(width=0.25, deep_stem=True), tmp_path / "deep.pth")
    config, model = build("deeplabv3plus", deep_stem=False, **TINY)
    with pytest.raises(InputError, match="deep stem.*set deep_stem: true"):
        import_into(path, config, model)
    path = save_torch(ResNet(units=(1, 2, 1, 1), width=0.25), tmp_path / "r.pth")
    config, model = build("deeplabv3plus", deep_stem=False, **TINY)
    with pytest.raises(InputError, match=r"\(1, 2, 1, 1\) blocks per stage.*\(1, 1, 1, 1\)"):
        import_into(path, config, model)


def test_a_one_channel_model_gets_the_channel_rule_on_its_stem(tmp_path):
    reference = ResNet(width=0.25, strides=(1, 2, 2, 1))
    path = save_torch(reference, tmp_path / "r.pth")
    config, model = build("deeplabv3plus", modalities=("depth",), channels={"depth": 1},
                          deep_stem=False, **TINY)
    _, report = import_into(path, config, model)
    assert any("conv1/kernel" in note and "3 input channels" in note for note in report.notes)
    # a depth image d gives what the RGB network gives for (d, d, d)
    d = image(33, 35, channels=1)
    with torch.no_grad():
        expected = nhwc(reference(torch_input(np.repeat(d, 3, axis=-1)))["P5"])
    ours = backbone_output(model, "layer4_0_relu")(d, training=False)
    assert np.abs(keras.ops.convert_to_numpy(ours) - expected).max() < TOLERANCE


def randomize_keras(model, seed=0):
    """Random weights everywhere (BN variances positive), so biases and BN stats matter."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([1 + 0.2 * rng.normal(size=c), 0.2 * rng.normal(size=c),
                               0.2 * rng.normal(size=c), 0.5 + rng.uniform(size=c)])
        elif layer.weights:   # kernels scaled to keep the activations O(1) at any depth
            layer.set_weights([rng.normal(size=w.shape) * (0.5 / np.prod(w.shape[:-1]) ** 0.5
                                                           if len(w.shape) > 1 else 0.05)
                               for w in layer.weights])


def save_legacy_h5(model, path, keras2_names=False, root=None):
    """The applications' download layout: legacy HDF5, a group per layer (":0" names as
    Keras 2 wrote them when `keras2_names`); inside group `root` (a full-model file's
    "model_weights") when given."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        handle = file.create_group(root) if root else file
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
        if keras2_names:
            names = []
            handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset)
                              else None)
            for name in names:
                handle.move(name, name + ":0")
            for layer in handle.attrs["layer_names"]:
                group = handle[layer]
                group.attrs["weight_names"] = [n + ":0" for n in group.attrs["weight_names"]]
    return path


@pytest.mark.parametrize("application,backbone,keras2_names", [
    ("ResNet50", "resnet50", True), ("ResNet101", "resnet101", False)])
def test_keras_applications_resnet_matches_backbone_features(tmp_path, application, backbone,
                                                             keras2_names):
    reference = getattr(keras.applications, application)(weights=None,
                                                          input_shape=(64, 64, 3))
    randomize_keras(reference)
    path = save_legacy_h5(reference, tmp_path / f"{backbone}_weights_tf_dim_ordering.h5",
                          keras2_names)
    if keras2_names:   # the file is what Keras itself loads by layer name
        check = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
        check.load_weights(str(path), by_name=True)
        np.testing.assert_array_equal(check.get_layer("conv1_conv").bias.numpy(),
                                      reference.get_layer("conv1_conv").bias.numpy())
    config, model = build("deeplabv3plus", backbone=backbone, deep_stem=False,
                          stride_in_1x1=True, output_stride=32, pool_ceil=False)
    name, report = import_into(path, config, model)
    assert name == "keras_resnet"
    assert report.unused == []
    assert any("predictions" in note for note in report.notes)
    assert all(not p.startswith(("conv1", "bn1", "layer")) for p in report.lacking)
    x = image(64, 64)
    ours = backbone_output(model, "layer4_2_relu")(x, training=False)
    features = keras.Model(reference.input, reference.get_layer("conv5_block3_out").output)
    expected = keras.ops.convert_to_numpy(features(x, training=False))
    assert np.abs(keras.ops.convert_to_numpy(ours) - expected).max() < TOLERANCE


def test_a_model_built_unlike_the_source_gets_a_note(tmp_path):
    path = save_torch(ResNet(width=0.25), tmp_path / "resnet50.pth")   # v1.5, floor pool
    config, model = build("deeplabv2", **TINY)    # Caffe strides, ceil pool
    _, report = import_into(path, config, model)
    assert any("stride_in_1x1: False, the model has True" in note for note in report.notes)

