"""One-way layers: a package of ssma_tf imports only its own layer or the layers below it.

Every module under ssma_tf/ is read with `ast` (imports at module level AND inside
functions, relative ones resolved), nothing is imported. Layers, low to high:

    0  errors, io_utils, config, cli (and the ssma_tf package itself)
    1  data, datasets, models, visualization
    2  optim (optimizers and LR schedules, below every framework), weights (pretrained-weight
       readers and importers, below training's init_checkpoint)
    3  frameworks, evaluation
    4  training
    5  export, runs (a trained run loaded for the command-line tools)
    6  api, app (the Python API `Segmenter` and the browser demo on top of it); the package
       root re-exports `Segmenter` lazily (a function-level import in its __getattr__)
       root scripts (train.py, evaluate.py, ...) and a package's __main__ module (`python -m
       ssma_tf.weights`) are above all: nothing in ssma_tf imports them.

Also checked: same-layer packages kept APART (frameworks <-> evaluation; models import no
other layer-1 package), no import of a root script, and no circle of module imports.
A new top-level part of ssma_tf needs a row in LAYERS, or this test fails naming it.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ssma_tf"

LAYERS = {
    "errors": 0, "io_utils": 0, "registry": 0, "config": 0, "cli": 0,
    "data": 1, "datasets": 1, "models": 1, "visualization": 1,
    "optim": 2, "weights": 2,
    "frameworks": 3, "evaluation": 3,
    "training": 4,
    "export": 5, "runs": 5,
    "api": 6, "app": 6,
}
ROOT_LAYER = 0          # ssma_tf/__init__.py: the version, and the lazy re-export below
ROOT_LAZY = {"ssma_tf.api"}   # imported by ssma_tf/__init__.py's __getattr__ on first use

# Same-layer packages that must not import each other (importer, imported).
APART = {
    ("frameworks", "evaluation"): "training regimes and metrics meet only in training",
    ("evaluation", "frameworks"): "evaluation takes a model, never a framework",
    ("models", "data"): "models are a pure Keras leaf (they run under KERAS_BACKEND=jax)",
    ("models", "datasets"): "models are a pure Keras leaf",
    ("models", "visualization"): "models are a pure Keras leaf",
}

def _module_name(path, root):
    rel = os.path.relpath(path, root)[:-len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def _is_module(name, root):
    base = os.path.join(root, *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def imports_of(path, root):
    """[(line, imported module)] of the file `path` (a module under `root`), module- and
    function-level; `from pkg import name` counts as pkg.name when that is a module."""
    module = _module_name(path, root)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if _is_module(full, root) else base))
    return sorted(set(found))


def part_of(module):
    """The top-level part of ssma_tf that `module` belongs to ("" for ssma_tf itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(part):
    return ROOT_LAYER if part == "" else LAYERS.get(part)


def python_files(root, package=PACKAGE):
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def check(root, root_scripts=()):
    """Every import that runs against the layers, as a message naming the file and line."""
    problems = []
    for path in python_files(root):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        module = _module_name(path, root)
        if module.endswith(".__main__"):   # `python -m` entry point: top-level, like a root script
            continue
        here = part_of(module)
        if layer_of(here) is None:
            problems.append(f"{rel}: ssma_tf.{here} has no layer; add it to LAYERS in "
                            f"{os.path.basename(__file__)}")
            continue
        for line, target in imports_of(path, root):
            top = target.split(".")[0]
            if top in root_scripts or top == "dataset":
                problems.append(f"{rel}:{line}: imports {target}, a root script or the "
                                "removed top-level 'dataset' package; the library must not")
                continue
            if top != PACKAGE:
                continue
            there = part_of(target)
            if module == PACKAGE and target in ROOT_LAZY:
                continue
            if layer_of(there) is None:
                problems.append(f"{rel}:{line}: imports {target}, whose part ssma_tf.{there} "
                                "has no layer in LAYERS")
            elif layer_of(there) > layer_of(here):
                problems.append(f"{rel}:{line}: {here or PACKAGE} (layer {layer_of(here)}) "
                                f"imports {target} (layer {layer_of(there)}): a lower layer "
                                "must not import a higher one")
            elif (here, there) in APART:
                problems.append(f"{rel}:{line}: {here} imports {target}, a same-layer sibling "
                                f"it must not import ({APART[here, there]})")
    return problems


def _root_scripts():
    return {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}


def test_no_lower_layer_imports_a_higher_one():
    problems = check(ROOT, _root_scripts())
    assert not problems, "import direction violations:\n" + "\n".join(problems)


def test_every_module_parses_and_belongs_to_a_layer():
    files = list(python_files(ROOT))
    assert len(files) > 40
    parts = {part_of(_module_name(path, ROOT)) for path in files}
    assert parts - {""} <= set(LAYERS), sorted(parts - {""} - set(LAYERS))


def import_cycles(root):
    """Module-level circles of imports inside ssma_tf (function-level imports included: a
    lazy import only hides a circle; the package root's on-demand ROOT_LAZY re-export is
    left out: every submodule import runs the root first, never the reverse). Each as a
    sorted list of module names."""
    graph = {}
    for path in python_files(root):
        module = _module_name(path, root)
        targets = {target for _, target in imports_of(path, root)
                   if target.split(".")[0] == PACKAGE and _is_module(target, root)
                   and not (module == PACKAGE and target in ROOT_LAZY)}
        graph[module] = targets
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):                     # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circles_between_modules():
    cycles = import_cycles(ROOT)
    assert not cycles, "modules that import each other (directly or through others): " + (
        "; ".join(" <-> ".join(cycle) for cycle in cycles))


def _write(root, rel, text):
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fake_package(root, files):
    """A tiny ssma_tf tree under `root`: empty packages plus `files` {path: source}."""
    _write(root, "ssma_tf/__init__.py", "")
    for package in ("models", "evaluation", "frameworks", "data", "datasets", "training"):
        _write(root, f"ssma_tf/{package}/__init__.py", "")
    for rel, text in files.items():
        _write(root, rel, text)
    return check(str(root), root_scripts={"evaluate"})


@pytest.mark.parametrize("rel,text,expected", [
    ("ssma_tf/models/a.py", "import os\n\ndef f():\n    from ssma_tf.training import c\n",
     r"^ssma_tf/models/a.py:4: models \(layer 1\) imports ssma_tf.training.c \(layer 4\)"),
    ("ssma_tf/evaluation/a.py", "from ..frameworks import b\n",
     r"^ssma_tf/evaluation/a.py:1: evaluation imports ssma_tf.frameworks.b, a same-layer"),
    ("ssma_tf/models/a.py", "from ssma_tf.data import b\n", r"a same-layer sibling"),
    ("ssma_tf/data/a.py", "import ssma_tf.runs\n", r"data \(layer 1\) imports ssma_tf.runs "),
    ("ssma_tf/data/a.py", "from ssma_tf import runs\n", r"imports ssma_tf.runs \(layer 5\)"),
    ("ssma_tf/training/a.py", "import evaluate\n", r"imports evaluate, a root script"),
    ("ssma_tf/training/a.py", "from dataset.registry import x\n", r"top-level 'dataset'"),
    ("ssma_tf/newpart.py", "", r"ssma_tf.newpart has no layer"),
])
def test_checker_flags_function_level_relative_and_root_script_imports(tmp_path, rel, text,
                                                                       expected):
    import re

    problems = _fake_package(tmp_path, {
        "ssma_tf/frameworks/b.py": "", "ssma_tf/data/b.py": "", "ssma_tf/runs.py": "",
        "ssma_tf/training/c.py": "", rel: text})
    assert len(problems) == 1 and re.search(expected, problems[0]), problems


def test_checker_accepts_downward_same_layer_and_absent_optim_imports(tmp_path):
    problems = _fake_package(tmp_path, {
        "ssma_tf/runs.py": "from ssma_tf.training import c\nimport ssma_tf.errors\n",
        "ssma_tf/errors.py": "",
        "ssma_tf/training/c.py": "from . import d\nfrom ..evaluation import e\n"
                                 "def f():\n    from ssma_tf.frameworks import g\n",
        "ssma_tf/training/d.py": "import numpy\n",
        "ssma_tf/frameworks/g.py": "from ssma_tf.optim import sgd\nfrom . import h\n",
        "ssma_tf/data/a.py": "from ssma_tf.datasets import registry\n",
        "ssma_tf/data/__main__.py": "from ssma_tf.training import c\n",   # a CLI entry point
    })
    assert not problems, problems


def test_cycle_finder_sees_a_lazy_import_circle(tmp_path):
    _fake_package(tmp_path, {
        "ssma_tf/models/a.py": "from ssma_tf.models.b import f\n",
        "ssma_tf/models/b.py": "def f():\n    from ssma_tf.models import a\n",
        "ssma_tf/models/c.py": "from ssma_tf.models import a, b\n"})
    assert import_cycles(str(tmp_path)) == [["ssma_tf.models.a", "ssma_tf.models.b"]]
