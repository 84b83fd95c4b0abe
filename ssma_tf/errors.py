"""Errors for bad user input: the message always names the file, line or key."""


class InputError(ValueError):
    """Bad user input (file, list line, image, flag). CLIs print it and exit 2."""


class ConfigError(InputError):
    """A config key is unknown, mistyped or has a value of the wrong type."""
