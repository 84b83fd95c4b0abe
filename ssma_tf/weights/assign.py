"""Assign mapped tensors to a model's variables: shapes checked, and a report of what matched,
what the source had that no variable took, and what the model still lacks."""

import dataclasses

import numpy as np

from ssma_tf.errors import InputError


def variables_by_path(model):
    """{path: variable} of every weight of `model`; a path seen twice gets "#<index>"."""
    by_path = {}
    for index, variable in enumerate(model.weights):
        key = variable.path if variable.path not in by_path else f"{variable.path}#{index}"
        by_path[key] = variable
    return by_path


@dataclasses.dataclass
class Mapping:
    """What an importer made of a source for one model.

    values: {variable path: array in the variable's layout}; origin: {variable path: the
    source tensor name(s) it came from, for messages}; used: source names consumed (a
    tensor read but deliberately dropped, e.g. `num_batches_tracked`, counts as used);
    expected: the variable paths the source must fill (missing ones are an error; the rest
    stay as built, e.g. a decoder over an ImageNet backbone); head: the paths that depend
    on the class count (skipped on a shape mismatch when a new head is allowed); notes:
    lines for the report (layout folds, re-initialised layers); sources: {variable path:
    its source names}."""

    values: dict = dataclasses.field(default_factory=dict)
    origin: dict = dataclasses.field(default_factory=dict)
    used: set = dataclasses.field(default_factory=set)
    expected: set = dataclasses.field(default_factory=set)
    head: set = dataclasses.field(default_factory=set)
    notes: list = dataclasses.field(default_factory=list)
    sources: dict = dataclasses.field(default_factory=dict)

    def put(self, path, value, *names):
        """Map source tensors `names` (already transformed into `value`) onto `path`."""
        self.values[path] = np.asarray(value)
        self.origin[path] = " + ".join(names)
        self.sources[path] = names
        self.used.update(names)
        self.expected.add(path)

    def want(self, path, *names):
        """`path` needs source tensors `names` that the source lacks (an error when applied)."""
        self.origin[path] = " + ".join(names)
        self.expected.add(path)


@dataclasses.dataclass
class Report:
    """The outcome of `apply_mapping`, by name."""

    matched: list
    unused: list
    lacking: list
    new_head: list
    notes: list

    def lines(self):
        out = [f"matched: {len(self.matched)} variables"]
        for title, names in (("re-initialised (new head)", self.new_head),
                             ("left unused in the source", self.unused),
                             ("kept as built (not in the source)", self.lacking)):
            out.append(f"{title}: {len(names)}")
            out.extend(f"  {name}" for name in names)
        out.extend(f"note: {note}" for note in self.notes)
        return out


def apply_mapping(model, mapping, source_names, *, new_head=False, where="weights"):
    """Assign `mapping` to `model`; the Report. InputError naming both sides on a shape
    mismatch (unless `new_head` and the path is a head path) or on an expected variable the
    mapping lacks, and on a mapped path the model does not have."""
    variables = variables_by_path(model)
    unknown = sorted(set(mapping.values) - set(variables))
    if unknown:
        raise InputError(f"{where}: the model has no variable {unknown[0]} "
                         f"(mapped from {mapping.origin.get(unknown[0])})")
    missing = sorted(mapping.expected - set(mapping.values))
    if missing:
        wanted = mapping.origin.get(missing[0])
        raise InputError(f"{where}: the source lacks "
                         f"{wanted or 'the tensor'} for {missing[0]} ({len(missing)} missing)")
    matched, skipped = [], []
    for path, value in mapping.values.items():
        variable = variables[path]
        if tuple(value.shape) != tuple(variable.shape):
            if new_head and path in mapping.head:
                skipped.append(path)
                continue
            hint = " (a different class count: allow a new head)" if path in mapping.head else ""
            raise InputError(f"{where}: {mapping.origin[path]} has shape {tuple(value.shape)} "
                             f"but {path} has {tuple(variable.shape)}{hint}")
        matched.append(path)
    for path in matched:
        variables[path].assign(mapping.values[path].astype(variables[path].dtype))
    # a tensor only a skipped (new-head) variable took is unused; one read and deliberately
    # dropped (in `used`, feeding no variable) is not
    feeding = {n for path in mapping.values for n in mapping.sources.get(path, ())}
    taken = (mapping.used - feeding) | {n for path in matched
                                        for n in mapping.sources.get(path, ())}
    return Report(matched=sorted(matched),
                  unused=sorted(set(source_names) - taken),
                  lacking=sorted(set(variables) - set(matched) - set(skipped)),
                  new_head=sorted(skipped), notes=list(mapping.notes))
