"""Callbacks, one module per family: recorder, progress, ..."""
