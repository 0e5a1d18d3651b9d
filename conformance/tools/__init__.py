"""Tools built on the stages: selftest, fuzz, shrink, bench and export."""
