"""Fast layers (PLACEHOLDER: delegates to the reference until the fast path lands).

Same signatures as funkcije.layers."""
from .layers import (
    conv_forward_naive as conv_forward_fast,
    conv_backward_naive as conv_backward_fast,
    max_pool_forward_naive as max_pool_forward_fast,
    max_pool_backward_naive as max_pool_backward_fast,
    avg_pool_forward_naive as avg_pool_forward_fast,
    avg_pool_backward_naive as avg_pool_backward_fast,
)

IMPLEMENTATION = "reference"
