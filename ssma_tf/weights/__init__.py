"""Pretrained weights in other formats: read a file (`readers`), map its tensors onto one of
our models (`importers`: one importer per source layout), assign them with shape checks and a
report (`assign`).

The importers of each layout register in their own module of this package (`tf1_adapnet`,
`tf1_ssma`: the original AdapNet++ / SSMA TF1 checkpoints); `importers.load_all()` imports them
all. `python -m ssma_tf.weights convert|inspect` is the command line (`__main__`).
"""
