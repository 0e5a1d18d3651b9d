"""The harness's exit codes, shared by every command, and how a command reports bad usage."""

import sys

EXIT_OK = 0  # every selected case was judged and conforms
EXIT_NONCONFORMING = 1  # some case does not
EXIT_USAGE = 2  # bad usage, an invalid input file, a backend or reference that cannot run here
EXIT_INTERNAL = 3  # a fault of the harness (or an incomplete result set): no verdict on the backend
EXIT_NOTHING_JUDGED = 4  # nothing was judged: no case selected, or every selected case skipped
EXIT_INTERRUPTED = 130


def usage_error(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print `message` as `sepconv-conformance COMMAND: error: ...` on stderr; return the exit code."""
    print(f"sepconv-conformance {command}: error: {message}", file=sys.stderr)
    return code
