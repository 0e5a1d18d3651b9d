"""Stage 1, the cases: the frozen Case, the YAML loader, the operator's contract, seeded inputs, the
bank and its selection."""
