"""funkcije: convolutional networks from functional layers.

`funkcije.layers` is the readable reference; `funkcije.fast_layers` the fast path
with the same signatures; `funkcije.gradient_check` verifies gradients numerically.
"""
__version__ = "0.1.0"
