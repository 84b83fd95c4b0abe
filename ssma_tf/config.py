"""The config system: flat `key: value` YAML files (SSMA's .config files stay valid).

Keys are declared beside the code that reads them: the run's own keys (data, loop,
evaluation) here in CORE_KEYS; each model, backbone and framework declares its keys where it
registers (ssma_tf/registry.py). A config is checked against the keys of the components it
chooses (its `model`, the model's sub-components such as `backbone` or `expert`, its
`framework`): an unknown key, a wrongly typed value, or a key that only a component it does
not choose reads is a ConfigError naming the file, line and key. A file may extend others
with `base: other.config` (or a list of files; paths relative to the file): its own keys
override theirs. `--override key=value` values are parsed as YAML.
"""

import dataclasses
import difflib
import os

import yaml

from ssma_tf import registry
from ssma_tf.errors import ConfigError
from ssma_tf.registry import REGISTRIES, Key

LR_GROUPS = ("encoder", "decoder", "norm")


def _k(type_, default, doc, choices=(), bounds=None):
    return Key(type_, default, doc, tuple(choices), bounds=bounds)


STEPS = (1, None)            # counts of steps, images, classes: at least 1
COUNT = (0, None)            # 0 allowed (0: off)
POSITIVE = (1e-12, None)     # rates and sizes that must be above 0
RATIO = (1e-6, 1 - 1e-6)     # fractions strictly inside (0, 1)
FRACTION = (0.0, 1.0)


CORE_KEYS = {
    # --- SSMA's run keys (original names and meaning) ---
    "model": Key("str", "AdapNet_pp", "registered model (case-insensitive): AdapNet_pp, SSMA,"
                 " segformer, linearfusion, tokenfusion, deeplabv2, deeplabv3plus, ...",
                 component="model"),
    "num_classes": _k("int", None, "number of output channels (class 0 = void when"
                      " ignore_label 0)", bounds=STEPS),
    "checkpoint": _k("path", None, "checkpoint folder (train: output, auto-resume) or prefix"
                     " (test)"),
    "train_data": _k("path", None, "training records (converter --record path or shard glob)"),
    "test_data": _k("path", None, "evaluation records"),
    "batch_size": _k("int", 8, "global labeled batch size (all replicas together)", bounds=STEPS),
    "skip_step": _k("int", 10, "print a progress line every N steps", bounds=STEPS),
    "height": _k("int", 384, "training crop height", bounds=STEPS),
    "width": _k("int", 768, "training crop width", bounds=STEPS),
    "max_iteration": _k("int", 150000, "number of training steps (also the poly decay length)",
                        bounds=STEPS),
    "learning_rate": _k("float", 1e-3, "base learning rate", bounds=POSITIVE),
    "save_step": _k("int", 1000, "save a checkpoint every N steps (and at the end)", bounds=STEPS),
    "power": _k("float", 0.9, "poly learning-rate exponent", bounds=COUNT),
    "gpu_id": _k("str", None, "sets CUDA_VISIBLE_DEVICES (e.g. '0' or '0,1')"),
    "intialize": _k("path", None, "(sic, SSMA spelling) checkpoint to initialise the model from"
                    " when nothing to resume; alias of init_checkpoint"),
    "type": _k("str", None, "legacy SSMA modality pair, e.g. rgb_hha; mapped to modalities"),
    # --- data ---
    "modalities": _k("list", None, "input modalities; default [rgb, depth] for multimodal models,"
                     " [rgb] otherwise"),
    "dataset": _k("str", None, "dataset name in ssma_tf.datasets.registry (class names, palette)"),
    "val_data": _k("path", None, "validation records"),
    "unlabeled_data": _k("path", None, "unlabeled records (semi-supervised frameworks)"),
    "unlabeled_batch_size": _k("int", None, "global unlabeled batch size (default batch_size)",
                               bounds=STEPS),
    "labeled_ratio": _k("float", None, "without unlabeled_data: fraction of train_data used as"
                        " labeled (seeded hash split by split_seed), the rest as unlabeled",
                        bounds=RATIO),
    "split_seed": _k("int", 0, "seed of the labeled/unlabeled split"),
    "ignore_label": _k("int", 255, "label excluded from loss and mIoU (SSMA datasets: 0)",
                      bounds=(0, 255)),
    "scale_min": _k("float", 0.5, "random scale lower bound", bounds=POSITIVE),
    "scale_max": _k("float", 2.0, "random scale upper bound", bounds=POSITIVE),
    "flip": _k("bool", True, "random horizontal flip"),
    "photometric": _k("bool", True, "photometric jitter on colour modalities"),
    "depth_max": _k("float", 10.0, "metres mapped to 1.0 when normalising raw depth",
                    bounds=POSITIVE),
    "shuffle_buffer": _k("int", 256, "examples in the shuffle buffer", bounds=COUNT),
    "skip_corrupt_records": _k("bool", False, "train / evaluate past a corrupt record file"
                               " instead of stopping: a TFRecord file cannot be read past a bad"
                               " record, so the rest of that file is skipped; every record file"
                               " is read once at start to log, per corrupt file, how many"
                               " records were read of the sidecar's count"),
    "init_checkpoint": _k("path", None, "checkpoint to initialise from when nothing to resume"),
    # --- training ---
    "framework": Key("str", "supervised", "registered training regime: supervised,"
                     " supervised_moddrop, mean_teacher, mean_teacher_moddrop, cps, m3l, ...",
                     component="framework"),
    "strategy": _k("str", "one_device", "tf.distribute strategy (multi_worker reads TF_CONFIG)",
                   ("one_device", "mirrored", "multi_worker")),
    "seed": _k("int", 0, "global random seed"),
    "optimizer": _k("str", "adam", "optimizer", ("adam", "adamw", "sgd")),
    "weight_decay": _k("float", 0.0, "decoupled weight decay (adamw, sgd)", bounds=COUNT),
    "adam_epsilon": _k("float", 1e-8, "Adam / AdamW epsilon", bounds=POSITIVE),
    "momentum": _k("float", 0.9, "SGD momentum", bounds=FRACTION),
    "warmup_steps": _k("int", 0, "linear warm-up steps before poly decay", bounds=COUNT),
    "end_learning_rate": _k("float", 0.0, "poly decay end value (SSMA's TF1 default was 1e-4)",
                            bounds=COUNT),
    "lr_multipliers": _k("dict", {}, "learning-rate multiplier per group: encoder, decoder, norm"),
    "mixed_precision": _k("str", "none", "Keras dtype policy",
                          ("none", "mixed_float16", "mixed_bfloat16")),
    "xla": _k("bool", False, "jit-compile the train step"),
    "sync_bn": _k("bool", True, "synchronised BatchNorm across replicas"),
    "ohem": _k("bool", False, "online hard example mining in the supervised loss"),
    "ohem_thresh": _k("float", 0.7, "OHEM probability threshold", bounds=FRACTION),
    "ohem_min_kept": _k("int", None, "OHEM minimum kept pixels per image (default 0.08*H*W)",
                        bounds=COUNT),
    "summary_step": _k("int", 100, "write TensorBoard prediction images every N steps",
                       bounds=COUNT),
    "keep_checkpoints": _k("int", 5, "checkpoints kept in the checkpoint folder", bounds=STEPS),
    # --- evaluation ---
    "eval_scales": _k("list", [1.0], "multi-scale evaluation factors"),
    "eval_flip": _k("bool", False, "add horizontally flipped predictions at evaluation"),
    "eval_mode": _k("str", "whole", "evaluation view: the whole image, or sliding windows of"
                    " eval_crop at eval_stride with overlapping logits averaged",
                    ("whole", "slide")),
    "eval_crop": _k("list", None, "sliding-window size [height, width] (eval_mode: slide)"),
    "eval_stride": _k("list", None, "sliding-window step [height, width] (default 2/3 of"
                      " eval_crop)"),
    "eval_output": _k("str", "logits", "model output that evaluate / export / predict use, e.g."
                      " logits_depth for one LinearFusion stream (M3L reports every stream)"),
    "num_overlays": _k("int", 0, "prediction overlays written by evaluation", bounds=COUNT),
    "eval_step": _k("int", 0, "score the eval model on val_data every N steps and at the end"
                    " (as evaluate.py: eval_scales, eval_flip, eval_output) and keep the best"
                    " checkpoint in <checkpoint>/best (0: off)", bounds=COUNT),
    "best_metric": _k("str", "miou", "validation score that picks <checkpoint>/best (higher is"
                      " better)", ("miou", "pixel_accuracy", "mean_class_accuracy")),
}

_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
               "list": "a list", "dict": "a mapping", "path": "a path"}


def _coerce(spec, value):
    """Value converted to the key's type, or raise ValueError."""
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
        value = int(value)
    elif spec.type == "float":
        if isinstance(value, bool):
            raise ValueError
        value = float(value)
    elif spec.type == "bool":
        if not isinstance(value, bool):
            raise ValueError
    elif spec.type in ("str", "path"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and spec.type == "str":
            value = str(value)          # gpu_id: 0
        if not isinstance(value, str):
            raise ValueError
        value = value.strip()
        if value == "":
            return None
        if spec.component:
            return value                # checked against its registry
    elif spec.type == "list":
        if not isinstance(value, (list, tuple)):
            raise ValueError
        value = list(value)
    elif not isinstance(value, dict):
        raise ValueError
    else:
        value = dict(value)
    if spec.choices and value not in spec.choices:
        raise ValueError
    return value


def _check(key, spec, value, where):
    try:
        value = _coerce(spec, value)
    except (ValueError, TypeError, yaml.YAMLError):
        want = _TYPE_NAMES[spec.type]
        if spec.choices:
            want = "one of " + ", ".join(str(c) for c in spec.choices)
        raise ConfigError(f"{where}: key '{key}' must be {want}, got {value!r}") from None
    if spec.bounds and value is not None:
        low, high = spec.bounds
        if (low is not None and value < low) or (high is not None and value > high):
            want = f"at least {low}" if high is None else f"between {low} and {high}"
            if spec.bounds == POSITIVE:
                want = "above 0"
            raise ConfigError(f"{where}: key '{key}' must be {want}, got {value}")
    return value


def chosen_components(given, where):
    """(entries, {key: Key}) for the components `given` chooses: its model and framework and,
    recursively, what their component keys (e.g. `backbone`, `expert`) name; with every
    key they and the run read. A component's `key_defaults` replace other keys' defaults."""
    registry.load_builtin()
    specs, entries = dict(CORE_KEYS), []
    pending = ["model", "framework"]
    while pending:
        key = pending.pop(0)
        spec = specs[key]
        name = _check(key, spec, given.get(key), where(key)) or spec.default
        entry = REGISTRIES[spec.component].get(name, f"{where(key)}: key '{key}'")
        entries.append(entry)
        for sub, sub_spec in entry.keys.items():
            if specs.get(sub, sub_spec) != sub_spec:
                raise ConfigError(f"{spec.component} {entry.name!r} declares key '{sub}' "
                                  "unlike another chosen component")
            specs[sub] = sub_spec
            if sub_spec.component:
                pending.append(sub)
    for entry in entries:
        for key, default in entry.info.get("key_defaults", {}).items():
            if key in specs:        # e.g. a ResNet default, when the backbone is a ResNet
                specs[key] = dataclasses.replace(specs[key], default=default)
    return entries, specs


def _readers(key):
    """'model SSMA, framework cps' — the registered components that declare `key`."""
    names = [f"{entry.kind} {entry.name}" for reg in REGISTRIES.values() for entry in reg
             if key in entry.keys]
    return ", ".join(names)


def _not_read(key, where, entries, specs):
    readers = _readers(key)
    if readers:
        chosen = ", ".join(f"{e.kind} {e.name}" for e in entries)
        return ConfigError(f"{where}: key '{key}' is read by {readers}, not by this config's "
                           f"{chosen}")
    known = set(specs) | {k for reg in REGISTRIES.values() for e in reg for k in e.keys}
    hint = difflib.get_close_matches(key, sorted(known), n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{where}: unknown key '{key}'{extra}")


def _resolve(given, where):
    """{key: value} over the chosen components' keys: checked, defaults filled, names
    canonical, and the derived keys (modalities, init_checkpoint)."""
    entries, specs = chosen_components(given, where)
    for key in given:
        if key not in specs:
            raise _not_read(key, where(key), entries, specs)
    out = {key: _check(key, spec, given.get(key), where(key)) for key, spec in specs.items()}
    for key, spec in specs.items():
        if spec.component and out[key] is not None:
            out[key] = REGISTRIES[spec.component].get(out[key]).name
    if out["modalities"] is None:
        if out["type"]:
            out["modalities"] = out["type"].split("_")
        else:
            out["modalities"] = ["rgb", "depth"] if entries[0].multimodal else ["rgb"]
    unknown = sorted(set(out["lr_multipliers"]) - set(LR_GROUPS))
    if unknown:
        raise ConfigError(f"{where('lr_multipliers')}: key 'lr_multipliers': unknown group "
                          f"'{unknown[0]}', expected {', '.join(LR_GROUPS)}")
    if out["scale_min"] > out["scale_max"]:
        raise ConfigError(f"{where('scale_min')}: key 'scale_min' ({out['scale_min']}) must not "
                          f"exceed scale_max ({out['scale_max']})")
    bad = [v for v in out["eval_scales"] if isinstance(v, bool) or
           not isinstance(v, (int, float)) or v <= 0]
    if bad:
        raise ConfigError(f"{where('eval_scales')}: key 'eval_scales' must list numbers above "
                          f"0, got {bad[0]!r}")
    if out["init_checkpoint"] is None:
        out["init_checkpoint"] = out["intialize"]
    return out


class Config:
    """Attribute access over the resolved keys of the chosen components; `source` names the
    file. Read-only; `replace()` gives a checked copy."""

    def __init__(self, given, source="<dict>", where=None):
        where = dict(where or {})

        def locate(key):
            return where.get(key, source)

        object.__setattr__(self, "_given", dict(given))
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_values", _resolve(given, locate))
        object.__setattr__(self, "source", source)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r} (no chosen component reads "
                                 "it)") from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; use replace(...)")

    def __contains__(self, key):
        return key in self._values

    def to_dict(self):
        return dict(self._values)

    def explicit(self):
        """The keys the file, overrides or dict set, as given."""
        return dict(self._given)

    def replace(self, **changes):
        """A copy with `changes` applied (checked; derived defaults re-derived)."""
        given = {**self._given, **changes}
        where = {k: v for k, v in self._where.items() if k not in changes}
        return Config(given, self.source, where)

    def __repr__(self):
        return f"Config({self.source!r}, {self._values!r})"


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
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{path}{line}: not valid YAML ({problem})") from None
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


def _read_file(path, chain=()):
    """({key: value}, {key: "file:line"}) of `path` over its `base` files."""
    if os.path.abspath(path) in chain:
        raise ConfigError(f"{path}: 'base' includes itself ({' -> '.join(chain)})")
    raw, where, seen, bases = {}, {}, {}, []
    for key, value, line in _parse_file(path):
        here = f"{path}:{line}"
        if not isinstance(key, str):
            raise ConfigError(f"{here}: key {key!r} is not a name")
        if key in seen:
            raise ConfigError(f"{here}: key '{key}' repeats line {seen[key]}")
        seen[key] = line
        if key == "base":
            bases = [value] if isinstance(value, str) else value
            if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
                raise ConfigError(f"{here}: 'base' must be a file name or a list of them")
            base_where = here
            continue
        raw[key], where[key] = value, here
    merged, merged_where = {}, {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise ConfigError(f"{base_where}: base file {base_path} does not exist")
        values, places = _read_file(base_path, (*chain, os.path.abspath(path)))
        merged.update(values)
        merged_where.update(places)
    merged.update(raw)
    merged_where.update(where)
    return merged, merged_where


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
    """Config from a flat YAML file (over its `base` files) plus `key=value` overrides."""
    raw, where = _read_file(path)
    for text in overrides:
        key, value = parse_override(text)
        raw[key], where[key] = value, f"--override {text!r}"
    return Config(raw, path, where)


def config_from_dict(values, source="<dict>"):
    """Config from a dict of keys (tests, programmatic use), checked like a file."""
    return Config(values, source)


def config_from_saved(values, source):
    """Config from a run_info.json's resolved keys: the keys its components do not read (an
    older version wrote every key's default) are left out."""
    _, specs = chosen_components(values, lambda key: f"{source}: key")
    return Config({k: v for k, v in values.items() if k in specs}, source)


def apply_gpu_id(config):
    """Set CUDA_VISIBLE_DEVICES from `gpu_id` (before TensorFlow touches a GPU)."""
    if config.gpu_id is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.gpu_id


def _table(keys):
    rows = ["| key | type | default | doc |", "| --- | --- | --- | --- |"]
    for key, spec in keys.items():
        kind = f"{spec.type}: {' / '.join(str(c) for c in spec.choices)}" if spec.choices \
            else spec.type
        rows.append(f"| `{key}` | {kind} | `{spec.default!r}` | {spec.doc} |")
    return rows


def describe_keys():
    """Markdown reference of every key: the run's, then each registered component's."""
    registry.load_builtin()
    lines = ["# Config keys", "",
             "Generated from the key declarations by `python -m ssma_tf.config`; a test fails "
             "when this page is stale.", "", "## Run (every config)", "", *_table(CORE_KEYS)]
    for kind, reg in REGISTRIES.items():
        for entry in sorted(reg, key=lambda e: e.name.lower()):
            if not getattr(entry.obj, "__module__", "ssma_tf").startswith("ssma_tf."):
                continue        # registered from outside the package (a test, a user module)
            lines += ["", f"## {kind} `{entry.name}`", ""]
            if entry.keys:
                lines += _table(entry.keys)
            else:
                lines.append("No keys of its own.")
            if entry.info.get("key_defaults"):
                changed = ", ".join(f"`{k}` {v!r}" for k, v in entry.info["key_defaults"].items())
                lines += ["", f"Changes defaults: {changed}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(describe_keys(), end="")
