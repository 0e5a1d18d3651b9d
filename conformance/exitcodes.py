"""The harness's exit codes, shared by every command."""

EXIT_OK = 0  # every case conforms
EXIT_NONCONFORMING = 1  # some case does not
EXIT_USAGE = 2  # bad usage, an invalid case file, a backend or reference that cannot run here
EXIT_INTERNAL = 3  # an internal error of the harness
EXIT_INTERRUPTED = 130
