"""Pretrained weights in other formats: read a file (`readers`), map its tensors onto one of
our models (`importers`: one importer per source layout), assign them with shape checks and a
report (`assign`).

The importers of each layout register in their own module of this package; `importers.load_all()`
imports them all.
"""
