"""Dataset definitions, preparers and split files."""
