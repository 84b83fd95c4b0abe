"""How every command-line tool ends: an anticipated failure (InputError) prints one line
`error: ...` and exits 2, never a traceback; an interrupt (Ctrl-C) exits 130; any other
exception prints one line and "run with --debug for the traceback" and exits 1 (with
`--debug` on the command line, the traceback instead)."""

import functools
import sys

from ssma_tf.errors import InputError, print_cli_error

DEBUG_FLAG = "--debug"
UNEXPECTED_EXIT = 1
INTERRUPTED_EXIT = 130


def without_debug(argv):
    """`argv` less --debug (for parsers that do not know it, e.g. absl's)."""
    return [arg for arg in argv if arg != DEBUG_FLAG]


def guarded(main):
    """Wrap a tool's `main(argv)` (argv: its arguments, default sys.argv[1:]) as above; the
    wrapped main gets argv without --debug."""
    @functools.wraps(main)
    def wrapper(argv=None):
        args = list(sys.argv[1:] if argv is None else argv)
        debug = DEBUG_FLAG in args or DEBUG_FLAG in sys.argv
        try:
            return main(without_debug(args))
        except InputError as exc:
            return print_cli_error(exc)
        except KeyboardInterrupt:
            return print_cli_error("interrupted", INTERRUPTED_EXIT)
        except Exception as exc:
            if debug:
                raise
            text = (str(exc).strip().splitlines() or [""])[0][:300]
            return print_cli_error(f"unexpected {type(exc).__name__}: {text} (run with "
                                   f"{DEBUG_FLAG} for the traceback)", UNEXPECTED_EXIT)
    return wrapper
