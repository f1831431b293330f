"""One error type for bad input, and the entry-point wrapper that prints it as one line."""
import errno
import sys

SHOWN_CHARS = 80  # of a name in an error line


class PipelineError(Exception):
    """Bad input or config: the message is one line naming the file or config key."""


def shown(name):
    """A name for an error line: quoted, escaped, and cut short if long."""
    printable = "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)
    if len(printable) <= SHOWN_CHARS:
        return f"'{printable}'"
    return f"'{printable[:SHOWN_CHARS]}...' ({len(name)} characters)"


def run_cli(main, argv=None):
    """Run an entry point; bad input or a full disk becomes one 'error: ...' line and exit 1."""
    try:
        main(argv)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # anything else is a bug or an environment problem: keep the traceback
        print(f"error: no space left on the device while writing {error.filename or 'an output'} "
              "(nothing was left under a final name; free space and run again)", file=sys.stderr)
        sys.exit(1)
