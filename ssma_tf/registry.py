"""Registries of the named components a config chooses: models, backbones, frameworks.

A component registers itself beside its code, with the config keys it reads:

    register_model("deeplabv3plus", build_deeplab_v3plus, keys=DEEPLAB_KEYS, crop_multiple=1)

`keys` maps a config key to a `Key` (type, default, doc, choices, and `arg`: the builder's
keyword when it differs from the key). The config system (ssma_tf/config.py) accepts a key
only when a chosen component declares it; `load_builtin()` imports the package's own
components so that their registrations have run (components defined elsewhere, e.g. in a
test or a user's module, register by being imported before the config is loaded).
"""

import dataclasses
import difflib
import importlib

from ssma_tf.errors import ConfigError

BUILTIN_PACKAGES = ("ssma_tf.models", "ssma_tf.frameworks")


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: type (int | float | str | bool | list | dict | path), default,
    one-line doc, allowed values, the builder keyword it is passed as (default: the key's
    own name), for a key that chooses a sub-component the registry it names, and bounds."""

    type: str
    default: object
    doc: str
    choices: tuple = ()
    arg: str = None
    component: str = None   # the value names an entry of this registry ("backbone", "model")
    bounds: tuple = None    # (low, high) for numbers


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered component: its name, the object (builder or class), its keys, and
    free-form facts the users of the registry read (e.g. a model's crop multiple)."""

    kind: str
    name: str
    obj: object
    keys: dict
    info: dict

    def __getattr__(self, name):
        try:
            return self.info[name]
        except KeyError:
            raise AttributeError(f"{self.kind} {self.name!r} has no {name!r}") from None


class Registry:
    """Name -> Entry for one kind of component; names match case-insensitively."""

    def __init__(self, kind):
        self.kind = kind
        self.entries = {}

    def register(self, name, obj, *, keys=None, **info):
        """Add `obj` as `name` (re-registering the same name replaces it); returns `obj`."""
        self.entries[name.lower()] = Entry(self.kind, name, obj, dict(keys or {}), info)
        return obj

    def __contains__(self, name):
        return str(name).lower() in self.entries

    def get(self, name, where="config") -> Entry:
        """The entry named `name`; ConfigError naming `where`, the known names and the closest."""
        entry = self.entries.get(str(name).lower())
        if entry is None:
            names = self.names()
            hint = difflib.get_close_matches(str(name), names, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{where}: unknown {self.kind} {name!r}{extra}; known: "
                              f"{', '.join(names)}")
        return entry

    def names(self):
        return [entry.name for entry in self.entries.values()]

    def __iter__(self):
        return iter(self.entries.values())


MODELS = Registry("model")
BACKBONES = Registry("backbone")
FRAMEWORKS = Registry("framework")

REGISTRIES = {"model": MODELS, "backbone": BACKBONES, "framework": FRAMEWORKS}  # by Key.component

register_model = MODELS.register
register_backbone = BACKBONES.register
register_framework = FRAMEWORKS.register


def load_builtin():
    """Import the package's component modules so that their registrations have run."""
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
