"""The engine behind `funkcije.fast_layers` (private; its public face is fast_layers).

    runtime.py        which kernels run (compiled or NumPy), threads and BLAS control,
                      workspace, denormal handling
    conv.py           convolution: im2col + GEMM, Winograd F(4x4, 3x3) and F(2x2, 3x3), direct AVX-512
    dense.py          the affine layers' GEMMs
    norm.py           spatial batch norm (fused with ReLU where asked) and ReLU
    numpy_kernels.py  pure-NumPy versions of the compiled kernels
    csrc/             the compiled sources: _compiled.pyx (+ norm.pxi, direct_conv.h,
                      openmp.pxi) and _update.pyx (the update rules of funkcije.optim)
"""
