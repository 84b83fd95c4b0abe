"""Errors for bad user input: the message always names the file, line or key."""

import sys


class InputError(ValueError):
    """Bad user input (file, list line, image, flag). CLIs print it and exit 2."""


class ConfigError(InputError):
    """A config key is unknown, mistyped or has a value of the wrong type."""


def print_cli_error(message, status=2) -> int:
    """Print `error: <message>` to stderr, as every CLI does; return the exit status."""
    print(f"error: {message}", file=sys.stderr)
    return status
