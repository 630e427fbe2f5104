# cython: language_level=3
"""Compiled kernels for funkcije.fast_layers (placeholder until the fast-layers work lands)."""

def implementation():
    return "cython"
