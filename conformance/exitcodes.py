"""The harness's exit codes, shared by every command, and how a command reports bad usage."""

import sys

EXIT_OK = 0  # every case conforms
EXIT_NONCONFORMING = 1  # some case does not
EXIT_USAGE = 2  # bad usage, an invalid case file, a backend or reference that cannot run here
EXIT_INTERNAL = 3  # an internal error of the harness
EXIT_INTERRUPTED = 130


def usage_error(command: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print `message` as `sepconv-conformance COMMAND: error: ...` on stderr; return the exit code."""
    print(f"sepconv-conformance {command}: error: {message}", file=sys.stderr)
    return code
