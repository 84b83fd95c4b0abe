"""The ResNet v2 backbone (Keras applications' ResNet50V2/101V2 structure): its stride and
dilation plan, Keras' .h5 files imported and matched on the same input, DeepLab-v3+ over it
training, and the v1/v2 mix-ups refused with the backbone to set."""

import keras
import numpy as np
import pytest

from ssma_tf.errors import InputError
from ssma_tf.models.resnet_v2 import resnet_v2_features, unit_plan
from test_weights_resnet import (
    TOLERANCE,
    backbone_output,
    build,
    image,
    import_into,
    randomize_keras,
    save_legacy_h5,
)

TINY = {"backbone_units": [1, 1, 1, 1], "width_multiplier": 0.25}


def test_unit_plan_strides_last_units_and_dilates_after_the_output_stride():
    units = (2, 2, 3, 2)
    assert unit_plan(units, 32) == [[(1, 1), (2, 1)], [(1, 1), (2, 1)],
                                    [(1, 1), (1, 1), (2, 1)], [(1, 1), (1, 1)]]
    assert unit_plan(units, 16) == [[(1, 1), (2, 1)], [(1, 1), (2, 1)],
                                    [(1, 1), (1, 1), (1, 1)], [(1, 2), (1, 2)]]
    assert unit_plan(units, 8) == [[(1, 1), (2, 1)], [(1, 1), (1, 1)],
                                   [(1, 2), (1, 2), (1, 2)], [(1, 4), (1, 4)]]


@pytest.mark.parametrize("output_stride,strides", [
    (32, (4, 8, 16, 32)), (16, (4, 8, 16, 16)), (8, (4, 8, 8, 8))])
def test_pyramid_sizes_and_dilated_layers(output_stride, strides):
    inputs = keras.Input((64, 96, 3))
    features = resnet_v2_features(inputs, units=(2, 2, 2, 2), width=0.25,
                                  output_stride=output_stride)
    for level, stride in zip(("P2", "P3", "P4", "P5"), strides):
        assert features[level].shape[1:3] == (64 // stride, 96 // stride), level
    assert [features[k].shape[-1] for k in ("P2", "P3", "P4", "P5")] == [64, 128, 256, 512]
    model = keras.Model(inputs, features)
    rate = {32: 1, 16: 2, 8: 4}[output_stride]
    assert model.get_layer("conv5_block2_2_conv").dilation_rate == (rate, rate)
    assert model.get_layer("conv4_block2_2_conv").strides == ((2, 2) if output_stride == 32
                                                              else (1, 1))


def test_dilation_leaves_the_features_before_it_unchanged():
    inputs = keras.Input((None, None, 3))
    models = {os: keras.Model(inputs, resnet_v2_features(inputs, units=(1, 2, 2, 1),
                                                         width=0.25, output_stride=os,
                                                         name=f"os{os}"))
              for os in (32, 16)}
    randomize_keras(models[32])
    for target in models[16].layers:
        if target.weights:
            source = models[32].get_layer(target.name.replace("os16", "os32"))
            target.set_weights(source.get_weights())
    x = image(40, 48)
    a, b = (models[os](x, training=False) for os in (32, 16))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a["P4"]),
                               keras.ops.convert_to_numpy(b["P4"]), atol=1e-6)
    assert a["P5"].shape[1:3] == (2, 2) and b["P5"].shape[1:3] == (3, 3)


def _v2_file(tmp_path, application="ResNet50V2", keras2_names=False, root=None):
    reference = getattr(keras.applications, application)(
        weights=None, include_top=False, input_shape=(None, None, 3))
    randomize_keras(reference)
    path = tmp_path / f"{application.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return reference, save_legacy_h5(reference, path, keras2_names, root)


@pytest.mark.parametrize("application,backbone,keras2_names,root", [
    ("ResNet50V2", "resnet50v2", True, None),
    ("ResNet101V2", "resnet101v2", False, "model_weights")])
def test_keras_applications_resnet_v2_matches_post_relu(tmp_path, application, backbone,
                                                        keras2_names, root):
    reference, path = _v2_file(tmp_path, application, keras2_names, root)
    config, model = build("deeplabv3plus", backbone=backbone, output_stride=32)
    name, report = import_into(path, config, model)
    assert name == "keras_resnet_v2"
    assert report.unused == []
    assert all(not p.startswith(("conv", "post_bn")) for p in report.lacking)
    x = image(69, 75)    # sizes 35, 18, 9, 5, 3 and 38, 19, 10, 5, 3: odd and even paddings
    ours = keras.ops.convert_to_numpy(backbone_output(model, "post_relu")(x, training=False))
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    assert ours.shape == expected.shape == (1, 3, 3, 2048)
    assert np.abs(expected).max() > 0.1     # a feature that the weights shape
    assert np.abs(ours - expected).max() < TOLERANCE


def test_v2_and_v1_files_into_the_other_backbone_name_the_fix(tmp_path):
    _, v2 = _v2_file(tmp_path)
    config, model = build("deeplabv3plus", backbone="resnet50", deep_stem=False)
    with pytest.raises(InputError, match="ResNet V2.*set backbone: resnet50v2"):
        import_into(v2, config, model)
    config, model = build("deeplabv3plus", backbone="resnet50v2", **TINY)
    with pytest.raises(InputError, match=r"\(3, 4, 6, 3\) units per stage.*\(1, 1, 1, 1\)"):
        import_into(v2, config, model)
    v1 = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    v1_path = save_legacy_h5(v1, tmp_path / "resnet50_notop.h5")
    config, model = build("deeplabv3plus", backbone="resnet50v2")
    with pytest.raises(InputError, match="v1.*set backbone: resnet50 or resnet101"):
        import_into(v1_path, config, model)


def test_tiny_deeplabv3plus_over_resnet50v2_trains_a_step():
    _, model = build("deeplabv3plus", classes=3, backbone="resnet50v2", **TINY)
    rng = np.random.default_rng(1)
    x = {"rgb": rng.normal(size=(2, 32, 32, 3)).astype("float32")}
    y = {"logits": rng.integers(0, 3, size=(2, 32, 32)).astype("int32")}
    assert model({"rgb": x["rgb"]}, training=False)["logits"].shape == (2, 32, 32, 3)
    encoder = model.get_layer("encoder")
    before = encoder.get_layer("conv2_block1_3_conv").kernel.numpy()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    loss = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    assert np.abs(encoder.get_layer("conv2_block1_3_conv").kernel.numpy() - before).max() > 0
