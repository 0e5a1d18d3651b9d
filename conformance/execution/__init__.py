"""Stage 3, execution: backends (resolved, isolated in child processes or run as external commands),
running one case, the pytest plugin that runs a bank, and the journal of results."""
