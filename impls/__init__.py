"""Bundled implementations under test."""
