"""The one config system: flat `key: value` YAML files (SSMA's .config files stay valid).

Every key is declared once in KEYS with its type, default and a one-line doc. Unknown or
wrongly typed keys raise ConfigError naming the file, line and key (with a "did you mean").
`--override key=value` values are parsed as YAML.
"""

import difflib
import os
from dataclasses import dataclass

import yaml

from ssma_tf.errors import ConfigError

MULTIMODAL_MODELS = ("ssma", "linearfusion", "tokenfusion")
LR_GROUPS = ("encoder", "decoder", "norm")
MODELS = ("AdapNet_pp", "SSMA", "segformer", "linearfusion", "tokenfusion")


@dataclass(frozen=True)
class Key:
    type: str              # int | float | str | bool | list | dict | path
    default: object
    doc: str
    choices: tuple = ()


def _k(type_, default, doc, choices=()):
    return Key(type_, default, doc, tuple(choices))


KEYS = {
    # --- SSMA / AdapNet++ keys (original names and meaning) ---
    "model": _k("str", "AdapNet_pp", "model builder: AdapNet_pp, SSMA, segformer, linearfusion,"
                " tokenfusion (case-insensitive)"),
    "num_classes": _k("int", None, "number of output channels (class 0 = void when ignore_label 0)"),
    "checkpoint": _k("path", None, "checkpoint folder (train: output, auto-resume) or prefix (test)"),
    "checkpoint1": _k("path", None, "stage-1 expert checkpoint for the first modality (SSMA)"),
    "checkpoint2": _k("path", None, "stage-1 expert checkpoint for the second modality (SSMA)"),
    "train_data": _k("path", None, "training records (converter --record path or shard glob)"),
    "test_data": _k("path", None, "evaluation records"),
    "batch_size": _k("int", 8, "global labeled batch size (all replicas together)"),
    "skip_step": _k("int", 10, "print a progress line every N steps"),
    "height": _k("int", 384, "training crop height"),
    "width": _k("int", 768, "training crop width"),
    "max_iteration": _k("int", 150000, "number of training steps (also the poly decay length)"),
    "learning_rate": _k("float", 1e-3, "base learning rate"),
    "save_step": _k("int", 1000, "save a checkpoint every N steps (and at the end)"),
    "power": _k("float", 0.9, "poly learning-rate exponent"),
    "gpu_id": _k("str", None, "sets CUDA_VISIBLE_DEVICES (e.g. '0' or '0,1')"),
    "intialize": _k("path", None, "(sic, SSMA spelling) checkpoint to initialise the model from"
                    " when nothing to resume; alias of init_checkpoint"),
    "type": _k("str", None, "legacy SSMA modality pair, e.g. rgb_hha; mapped to modalities"),
    # --- data ---
    "modalities": _k("list", None, "input modalities; default [rgb, depth] for SSMA/fusion models,"
                     " [rgb] otherwise"),
    "dataset": _k("str", None, "dataset name in dataset.registry (class names, palette)"),
    "val_data": _k("path", None, "validation records"),
    "unlabeled_data": _k("path", None, "unlabeled records (semi-supervised frameworks)"),
    "unlabeled_batch_size": _k("int", None, "global unlabeled batch size (default batch_size)"),
    "labeled_ratio": _k("float", None, "without unlabeled_data: fraction of train_data used as"
                        " labeled (seeded hash split by split_seed), the rest as unlabeled"),
    "split_seed": _k("int", 0, "seed of the labeled/unlabeled split"),
    "ignore_label": _k("int", 255, "label excluded from loss and mIoU (SSMA datasets: 0)"),
    "scale_min": _k("float", 0.5, "random scale lower bound"),
    "scale_max": _k("float", 2.0, "random scale upper bound"),
    "flip": _k("bool", True, "random horizontal flip"),
    "photometric": _k("bool", True, "photometric jitter on colour modalities"),
    "depth_max": _k("float", 10.0, "metres mapped to 1.0 when normalising raw depth"),
    "shuffle_buffer": _k("int", 256, "examples in the shuffle buffer"),
    # --- model ---
    "width_multiplier": _k("float", 1.0, "channel width multiplier (AdapNet++/SSMA)"),
    "backbone_units": _k("list", [3, 4, 6, 3], "residual units per ResNet stage (AdapNet++)"),
    "rates": _k("str", "code", "dilation rates of the last stage", ("code", "paper")),
    "easpp_rates": _k("list", [3, 6, 12], "eASPP dilation rates"),
    "aux_loss": _k("bool", True, "AdapNet++ auxiliary heads in the loss"),
    "dropout": _k("float", 0.7, "AdapNet++ drop rate in block 4 unit 3 (original keep_prob 0.3)"),
    "backbone": _k("str", "b0", "MiT variant", ("b0", "b1", "b2", "b3", "b4", "b5")),
    "decoder_dim": _k("int", 256, "Segformer/LinearFusion decoder width"),
    "fusion_ratio": _k("float", 0.8, "LinearFusion/TokenFusion ratio"),
    "ensemble": _k("str", "learned", "LinearFusion/TokenFusion ensemble output: learned "
                   "(softmax(alpha)-weighted streams, alpha trained) or mean (M3L's code)",
                   ("learned", "mean")),
    "stage": _k("str", None, "SSMA recipe stage: expert | fusion | finetune (default: fusion for"
                " SSMA, expert otherwise)", ("expert", "fusion", "finetune")),
    "freeze_experts": _k("bool", None, "freeze SSMA experts (default: true in stage fusion)"),
    "init_checkpoint": _k("path", None, "checkpoint to initialise from when nothing to resume"),
    # --- training ---
    "framework": _k("str", "supervised", "training regime", (
        "supervised", "supervised_moddrop", "mean_teacher", "mean_teacher_moddrop", "cps", "m3l")),
    "strategy": _k("str", "one_device", "tf.distribute strategy (multi_worker reads TF_CONFIG)",
                   ("one_device", "mirrored", "multi_worker")),
    "seed": _k("int", 0, "global random seed"),
    "optimizer": _k("str", "adam", "optimizer", ("adam", "adamw", "sgd")),
    "weight_decay": _k("float", 0.0, "decoupled weight decay (adamw, sgd)"),
    "warmup_steps": _k("int", 0, "linear warm-up steps before poly decay"),
    "end_learning_rate": _k("float", 0.0, "poly decay end value (SSMA's TF1 default was 1e-4)"),
    "lr_multipliers": _k("dict", {}, "learning-rate multiplier per group: encoder, decoder, norm"),
    "mixed_precision": _k("str", "none", "Keras dtype policy",
                          ("none", "mixed_float16", "mixed_bfloat16")),
    "xla": _k("bool", False, "jit-compile the train step"),
    "sync_bn": _k("bool", True, "synchronised BatchNorm across replicas"),
    "ohem": _k("bool", False, "online hard example mining in the supervised loss"),
    "ohem_thresh": _k("float", 0.7, "OHEM probability threshold"),
    "ohem_min_kept": _k("int", None, "OHEM minimum kept pixels per image (default 0.08*H*W)"),
    "summary_step": _k("int", 100, "write TensorBoard prediction images every N steps"),
    "keep_checkpoints": _k("int", 5, "checkpoints kept in the checkpoint folder"),
    # --- semi-supervised ---
    "sup_only_steps": _k("int", 0, "semi-supervised frameworks: first steps on labeled batches"
                         " only (U2PL's sup_only_epoch); the teacher then copies the student"
                         " and ramp-up / EMA count from there"),
    "ema_decay": _k("float", 0.99, "mean-teacher EMA decay"),
    "consistency_weight": _k("float", 1.0, "weight of the pseudo-label / consistency loss"),
    "rampup_steps": _k("int", 0, "sigmoid ramp-up of the consistency / cps weight (0: off)"),
    "cps_weight": _k("float", 1.5, "cross pseudo supervision weight"),
    "pseudo_threshold": _k("float", 0.0, "hard pseudo labels: pixels whose top softmax probability"
                           " is below this are not trained (0: all, as M3L and CPS)"),
    "pseudo_class_ratio": _k("float", 0.0, "hard pseudo labels: every predicted class also keeps"
                             " its top fraction of pixels by confidence (DMT's class-balanced"
                             " selection, per batch; 0: off)"),
    "pseudo_rows": _k("str", "all", "rows trained on pseudo labels: all (M3L, CPS) or unlabeled"
                      " (U2PL, s4GAN)", ("all", "unlabeled")),
    "pseudo_targets": _k("str", "logits", "logits: the teacher's (CPS: the other network's)"
                         " main output labels every loss-weighted output (M3L, CPS);"
                         " per_output: each output learns from the same output of the labeler,"
                         " e.g. a LinearFusion stream from that stream", ("logits", "per_output")),
    "pseudo_balance": _k("str", "none", "prior: per-class logit offsets, fitted online, make the"
                         " share of unlabeled pixels each class gets as pseudo label match its"
                         " share of the labeled pixels (CPS and the mean-teacher family; with softmax_mse"
                         " the soft targets shift too; frameworks/pseudo_balance.py); none: off",
                         ("none", "prior")),
    "cutmix": _k("bool", False, "CutMix on unlabeled batches (CPS and the mean-teacher family)"),
    # (ssl engineer) consistency target and teacher forward mode, frameworks/mean_teacher.py
    "consistency": _k("str", "pseudo_ce", "mean-teacher consistency: hard pseudo-label CE (M3L)"
                      " or softmax MSE (TorchSemiSeg MT, weight 100)", ("pseudo_ce", "softmax_mse")),
    "teacher_train_mode": _k("bool", True, "teacher / pseudo-label forwards use batch statistics"
                             " and dropout (as M3L, TorchSemiSeg); false: inference mode"),
    # --- evaluation ---
    "eval_scales": _k("list", [1.0], "multi-scale evaluation factors"),
    "eval_flip": _k("bool", False, "add horizontally flipped predictions at evaluation"),
    "eval_output": _k("str", "logits", "model output that evaluate / export / predict use, e.g."
                      " logits_depth for one LinearFusion stream (M3L reports every stream)"),
    "num_overlays": _k("int", 0, "prediction overlays written by evaluation"),
    # --- trainer / framework seams (new) ---
    "adam_epsilon": _k("float", 1e-8, "Adam / AdamW epsilon"),
    "momentum": _k("float", 0.9, "SGD momentum"),
    "eval_step": _k("int", 0, "score the eval model on val_data every N steps and at the end"
                    " (as evaluate.py: eval_scales, eval_flip, eval_output) and keep the best"
                    " checkpoint in <checkpoint>/best (0: off)"),
    "best_metric": _k("str", "miou", "validation score that picks <checkpoint>/best (higher is"
                      " better)", ("miou", "pixel_accuracy", "mean_class_accuracy")),
}

_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
               "list": "a list", "dict": "a mapping", "path": "a path"}


def _coerce(key, value):
    """Value converted to the key's type, or raise ValueError."""
    spec = KEYS[key]
    if value is None:
        return spec.default
    if isinstance(value, str) and spec.type not in ("str", "path"):
        value = value.strip()
        if value == "":
            return spec.default
        value = yaml.safe_load(value) if spec.type != "float" else value
    if spec.type == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ValueError
        return int(value)
    if spec.type == "float":
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise ValueError
        return value
    if spec.type in ("str", "path"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "gpu_id":
            return str(value)
        if not isinstance(value, str):
            raise ValueError
        value = value.strip()
        if value == "":
            return None
        if spec.choices and value not in spec.choices:
            raise ValueError
        return value
    if spec.type == "list":
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return list(value)
    if not isinstance(value, dict):
        raise ValueError
    return dict(value)


class Config:
    """Attribute access over the resolved dict; `source` names the file."""

    def __init__(self, given, source="<dict>"):
        object.__setattr__(self, "_given", dict(given))
        object.__setattr__(self, "_values", _resolve(given))
        object.__setattr__(self, "source", source)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; use replace(...)")

    def to_dict(self):
        return dict(self._values)

    def replace(self, **changes):
        """A copy with `changes` applied (validated; derived defaults re-derived)."""
        given = dict(self._given)
        for key, value in changes.items():
            given[key] = _check(key, value, f"{self.source}: key")
        return Config(given, self.source)

    def __repr__(self):
        return f"Config({self.source!r}, {self._values!r})"


def _check(key, value, where):
    if key not in KEYS:
        hint = difflib.get_close_matches(key, KEYS, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"{where}: unknown key '{key}'{extra}")
    try:
        return _coerce(key, value)
    except (ValueError, TypeError, yaml.YAMLError):
        spec = KEYS[key]
        want = _TYPE_NAMES[spec.type]
        if spec.choices:
            want = "one of " + ", ".join(spec.choices)
        raise ConfigError(f"{where}: key '{key}' must be {want}, got {value!r}") from None


def _resolve(values):
    """Fill defaults and the derived keys (modalities, stage, freeze_experts)."""
    out = {key: spec.default for key, spec in KEYS.items()}
    out.update({k: v for k, v in values.items() if v is not None})
    model = str(out["model"])
    canonical = {m.lower(): m for m in MODELS}
    if model.lower().replace("-", "_") not in canonical:
        raise ConfigError(f"key 'model' must be one of {', '.join(MODELS)}, got {model!r}")
    out["model"] = canonical[model.lower().replace("-", "_")]
    multimodal = out["model"].lower() in MULTIMODAL_MODELS
    if out["modalities"] is None:
        if out["type"]:
            out["modalities"] = out["type"].split("_")
        else:
            out["modalities"] = ["rgb", "depth"] if multimodal else ["rgb"]
    unknown = sorted(set(out["lr_multipliers"]) - set(LR_GROUPS))
    if unknown:
        raise ConfigError(f"key 'lr_multipliers': unknown group '{unknown[0]}', expected "
                          f"{', '.join(LR_GROUPS)}")
    for key in ("pseudo_threshold", "pseudo_class_ratio"):
        if not 0.0 <= out[key] <= 1.0:
            raise ConfigError(f"key '{key}' must be between 0 and 1, got {out[key]}")
    if out["stage"] is None:
        out["stage"] = "fusion" if out["model"] == "SSMA" else "expert"
    if out["freeze_experts"] is None:
        out["freeze_experts"] = out["model"] == "SSMA" and out["stage"] == "fusion"
    if out["init_checkpoint"] is None:
        out["init_checkpoint"] = out["intialize"]
    return out


def _parse_file(path):
    """[(key, value, line)] from a flat YAML file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if node is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: expected flat 'key: value' lines")
    loader = yaml.SafeLoader("")
    entries = []
    for key_node, value_node in node.value:
        entries.append((loader.construct_object(key_node, deep=True),
                        loader.construct_object(value_node, deep=True),
                        key_node.start_mark.line + 1))
    return entries


def parse_override(text):
    """'key=value' -> (key, YAML-parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--override {text!r}: expected key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--override {text!r}: value is not valid YAML") from None
    return key.strip(), parsed


def load_config(path, overrides=()):
    """Config from a flat YAML file plus `key=value` overrides, validated and resolved."""
    raw, seen = {}, {}
    for key, value, line in _parse_file(path):
        where = f"{path}:{line}"
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} is not a name")
        if key in seen:
            raise ConfigError(f"{where}: key '{key}' repeats line {seen[key]}")
        seen[key] = line
        raw[key] = _check(key, value, where)
    for text in overrides:
        key, value = parse_override(text)
        raw[key] = _check(key, value, f"--override {text!r}")
    try:
        return Config(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(values, source="<dict>"):
    """Config from a dict of keys (tests, programmatic use), validated like a file."""
    raw = {key: _check(key, value, f"{source}: key") for key, value in values.items()}
    return Config(raw, source)


def apply_gpu_id(config):
    """Set CUDA_VISIBLE_DEVICES from `gpu_id` (before TensorFlow touches a GPU)."""
    if config.gpu_id is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.gpu_id


def describe_keys():
    """Markdown table of every key: name, type, default, doc."""
    rows = ["| key | type | default | doc |", "| --- | --- | --- | --- |"]
    for key, spec in KEYS.items():
        rows.append(f"| {key} | {spec.type} | {spec.default!r} | {spec.doc} |")
    return "\n".join(rows)
