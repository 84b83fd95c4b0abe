"""Config system: shipped configs load; keys belong to the components that read them; base
files; errors name file, line and key; the key reference is current."""

import glob
import os

import pytest

from ssma_tf.config import CORE_KEYS, config_from_dict, describe_keys, load_config
from ssma_tf.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text, name="x.config"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.config"))),
                         ids=os.path.basename)  # configs/_base/ holds fragments, not runs
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.num_classes > 1
    assert config.modalities
    if config.model == "SSMA":
        assert len(config.modalities) == 2


def test_shipped_configs_cover_datasets_and_stages():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.config"))}
    for dataset in ("cityscapes", "sunrgbd", "scannet", "freiburg_forest", "synthia", "demo"):
        for kind in ("adapnet_rgb_train", "adapnet_depth_train", "ssma_train", "ssma_test"):
            assert f"{dataset}_{kind}.config" in names


def test_legacy_ssma_config_with_blank_values(tmp_path):
    path = _write(tmp_path, "gpu_id: ''\nmodel: 'SSMA'\nnum_classes:\ncheckpoint1: ''\n"
                            "checkpoint: ' '\ntrain_data: ''\nbatch_size:\nheight: 384\n"
                            "width: 768\nlearning_rate: 1e-3\ntype: 'rgb_hha'\ndataset: ''\n")
    config = load_config(path)
    assert config.model == "SSMA" and config.checkpoint is None and config.num_classes is None
    assert config.learning_rate == 1e-3 and config.batch_size == CORE_KEYS["batch_size"].default
    assert config.modalities == ["rgb", "hha"]
    assert config.stage == "fusion" and config.expert == "AdapNet_pp"
    assert config.dropout == 0.0 and config.aux_loss is False    # SSMA's own defaults
    assert config.gpu_id is None and config.source == path


def test_defaults_depend_on_model():
    single = config_from_dict({"model": "adapnet_pp", "num_classes": 3})
    assert single.model == "AdapNet_pp" and single.modalities == ["rgb"]
    assert "stage" not in single and single.dropout == 0.7 and single.aux_loss is True
    fusion = config_from_dict({"model": "LinearFusion", "num_classes": 3})
    assert fusion.modalities == ["rgb", "depth"]
    assert config_from_dict({"intialize": "a/b"}).init_checkpoint == "a/b"


def test_unknown_key_names_file_line_and_hint(tmp_path):
    path = _write(tmp_path, "model: SSMA\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"x\.config:2: unknown key 'lerning_rate' "
                                          r"\(did you mean 'learning_rate'\?\)"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("batch_size: eight\n", "batch_size"), ("flip: 3\n", "flip"),
    ("strategy: mirorred\n", "strategy"), ("modalities: rgb\n", "modalities"),
    ("batch_size: true\n", "batch_size"), ("learning_rate: fast\n", "learning_rate")])
def test_wrong_type_names_key_and_line(tmp_path, text, key):
    path = _write(tmp_path, "model: AdapNet_pp\n" + text)
    with pytest.raises(ConfigError, match=rf"x\.config:2: key '{key}' must be"):
        load_config(path)


def test_repeated_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r":3: key 'height' repeats line 1"):
        load_config(_write(tmp_path, "height: 32\nwidth: 64\nheight: 64\n"))
    with pytest.raises(ConfigError, match=r"y\.config:2: not valid YAML"):
        load_config(_write(tmp_path, "a: 1\n b: [\n", "y.config"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.config"))


def test_overrides_are_yaml_and_validated(tmp_path):
    path = _write(tmp_path, "model: AdapNet_pp\nbatch_size: 8\n")
    config = load_config(path, ["batch_size=4", "modalities=[depth]",
                                "lr_multipliers={encoder: 0.1}"])
    assert config.batch_size == 4 and config.modalities == ["depth"]
    assert config.lr_multipliers == {"encoder": 0.1}
    with pytest.raises(ConfigError, match=r"--override 'bach_size=4'.*did you mean 'batch_size'"):
        load_config(path, ["bach_size=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["batch_size"])
    with pytest.raises(ConfigError, match="lr_multipliers.*unknown group 'head'"):
        load_config(path, ["lr_multipliers={head: 2}"])


@pytest.mark.parametrize("key", ["pseudo_threshold", "pseudo_class_ratio"])
def test_pseudo_label_fractions_must_lie_in_0_1(tmp_path, key):
    path = _write(tmp_path, "model: linearfusion\nframework: mean_teacher\n")
    assert getattr(load_config(path, [f"{key}=0.5"]), key) == 0.5
    with pytest.raises(ConfigError, match=rf"key '{key}' must be between 0 and 1, got 1.5"):
        load_config(path, [f"{key}=1.5"])


def test_config_is_read_only_and_replace_validates():
    config = config_from_dict({"num_classes": 3})
    with pytest.raises(AttributeError):
        config.num_classes = 4
    assert config.replace(num_classes=4).num_classes == 4
    with pytest.raises(ConfigError, match="unknown key 'num_class'"):
        config.replace(num_class=4)


def test_a_key_that_no_chosen_component_reads_is_an_error_naming_its_readers(tmp_path):
    path = _write(tmp_path, "model: AdapNet_pp\nframework: mean_teacher\ncps_weight: 1\n")
    with pytest.raises(ConfigError, match=r"x\.config:3: key 'cps_weight' is read by framework "
                                          r"cps, not by this config's model AdapNet_pp, "
                                          r"framework mean_teacher"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"key 'fusion_ratio' is read by model linearfusion"):
        config_from_dict({"model": "tokenfusion", "fusion_ratio": 0.5})
    with pytest.raises(ConfigError, match=r"unknown framework 'mean_teachr' \(did you mean "
                                          r"'mean_teacher'\?\)"):
        config_from_dict({"framework": "mean_teachr"})


def test_base_files_are_extended_and_errors_name_the_file_that_set_the_key(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "model: SSMA\nnum_classes: 3\nbatch_size: 8\n", "base.config")
    _write(tmp_path, "batch_size: 4\n", "more.config")
    child = _write(tmp_path, "base: [../base.config, ../more.config]\nheight: 32\n",
                   "sub/child.config")
    config = load_config(child, ["num_classes=5"])
    assert (config.model, config.batch_size, config.height, config.num_classes) == \
        ("SSMA", 4, 32, 5)
    _write(tmp_path, "model: AdapNet_pp\nstage: fusion\n", "bad_base.config")
    bad = _write(tmp_path, "base: bad_base.config\n", "bad.config")
    with pytest.raises(ConfigError, match=r"bad_base\.config:2: key 'stage' is read by model SSMA"):
        load_config(bad)
    loop = _write(tmp_path, "base: loop.config\n", "loop.config")
    with pytest.raises(ConfigError, match="'base' includes itself"):
        load_config(loop)
    with pytest.raises(ConfigError, match=r"missing\.config does not exist"):
        load_config(_write(tmp_path, "base: missing.config\n", "m.config"))


def test_builder_options_are_reachable_and_typed():
    config = config_from_dict({"model": "tokenfusion", "token_threshold": 0.1, "freeze_bn": True,
                               "drop_path_rate": 0.0, "num_classes": 3})
    assert (config.token_threshold, config.freeze_bn, config.drop_path_rate) == (0.1, True, 0.0)
    with pytest.raises(ConfigError, match="key 'backbone' must be one of b0, b1"):
        config_from_dict({"model": "segformer", "backbone": "b9"})


def test_key_reference_page_is_current():
    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as handle:
        assert handle.read() == describe_keys(), (
            "docs/config.md is stale: python -m ssma_tf.config > docs/config.md")


def test_every_key_is_documented():
    table = describe_keys()
    for key, spec in CORE_KEYS.items():
        assert spec.doc and f"| `{key}` |" in table
