"""One error type for bad input, and the entry-point wrapper that prints it as one line."""
import sys


class PipelineError(Exception):
    """Bad input or config: the message is one line naming the file or config key."""


def run_cli(main, argv=None):
    """Run an entry point; a PipelineError becomes 'error: <message>' and exit status 1."""
    try:
        main(argv)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
