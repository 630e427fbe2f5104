"""Builds the Cython extensions funkcije.kernels._compiled and funkcije.kernels._update
(sources in funkcije/kernels/csrc/).

If Cython or a C compiler is missing, or FUNKCIJE_NO_EXT=1 is set, the package
installs without the extensions and funkcije.fast_layers (and with it
funkcije.optim) falls back to NumPy (with one warning). OpenMP is used when the
compiler accepts -fopenmp.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup


def _links(code, flags):
    """The C compiler (CC, else cc) builds and links `code` with `flags`."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write(code)
        return subprocess.run([cc, src, "-o", os.path.join(d, "t"), *flags], capture_output=True).returncode == 0


def _openmp_flags():
    if os.environ.get("FUNKCIJE_NO_OPENMP") == "1" or sys.platform == "darwin":
        return [], []
    ok = _links("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n", ["-fopenmp"])
    return (["-fopenmp"], ["-fopenmp"]) if ok else ([], [])


def _libmvec():
    """glibc's vector math library (2.35+) links, with its AVX-512 erfc, exp and tanh: the
    GELU kernels' fast path (kernels/csrc/gelu.h). Its macro and libraries, or none."""
    if os.environ.get("FUNKCIJE_NO_LIBMVEC") == "1" or not sys.platform.startswith("linux"):
        return [], []
    ok = _links("#include <immintrin.h>\n__m512d _ZGVeN8v_erfc(__m512d);\n__m512d _ZGVeN8v_exp(__m512d);\n"
                "__m512d _ZGVeN8v_tanh(__m512d);\n"
                "__attribute__((target(\"avx512f\"))) double f(double a) { double o[8];\n"
                "  _mm512_storeu_pd(o, _ZGVeN8v_erfc(_ZGVeN8v_exp(_ZGVeN8v_tanh(_mm512_set1_pd(a)))));\n"
                "  return o[0]; }\nint main(void) { return __builtin_cpu_supports(\"avx512f\") ? f(0.5) > 2 : 0; }\n",
                ["-lmvec", "-lm"])
    return ([("FUNK_LIBMVEC", "1")], ["mvec", "m"]) if ok else ([], [])


def _extensions():
    if os.environ.get("FUNKCIJE_NO_EXT") == "1":
        return []
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    cflags, lflags = _openmp_flags()
    mvec_macros, mvec_libs = _libmvec()
    ext = Extension(
        "funkcije.kernels._compiled",
        ["funkcije/kernels/csrc/_compiled.pyx"],
        include_dirs=[numpy.get_include(), "funkcije/kernels/csrc"],
        depends=["funkcije/kernels/csrc/direct_conv.h", "funkcije/kernels/csrc/openmp.pxi",
                 "funkcije/kernels/csrc/norm.pxi", "funkcije/kernels/csrc/norm.h", "funkcije/kernels/csrc/pool.h",
                 "funkcije/kernels/csrc/winograd4.h", "funkcije/kernels/csrc/winograd4_t.h",
                 "funkcije/kernels/csrc/gelu.h"],
        extra_compile_args=["-O3"] + cflags,
        extra_link_args=lflags,
        libraries=mvec_libs,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")] + mvec_macros,
    )
    # The update rules must round like optim.py's NumPy code, operation for operation:
    # no contraction of a * b + c into one fused multiply-add (-march=native would allow
    # it). -fno-math-errno only drops errno for sqrt of a negative, so sqrt vectorises.
    update_kernels = Extension(
        "funkcije.kernels._update",
        ["funkcije/kernels/csrc/_update.pyx"],
        depends=["funkcije/kernels/csrc/openmp.pxi"],
        extra_compile_args=["-O3", "-ffp-contract=off", "-fno-math-errno"] + cflags,
        extra_link_args=lflags,
    )
    return cythonize([ext, update_kernels], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True})


setup(ext_modules=_extensions())
