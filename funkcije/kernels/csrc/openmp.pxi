# Included (textually) by each compiled module of funkcije: whether OpenMP was compiled
# in, how many threads a parallel region may use, and a settable threshold below
# which a kernel runs on one thread. The including module sets PARALLEL_MIN_WORK.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int funk_openmp(void) { return 1; }
    static int funk_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int funk_openmp(void) { return 0; }
    static int funk_max_threads(void) { return 1; }
    #endif
    """
    int funk_openmp() nogil
    int funk_max_threads() nogil

cdef Py_ssize_t PARALLEL_MIN_WORK


def get_parallel_threshold():
    """Elements a kernel must touch before it uses more than one OpenMP thread."""
    return PARALLEL_MIN_WORK


def set_parallel_threshold(Py_ssize_t elements):
    """Set the single-thread threshold (elements); returns the previous value."""
    global PARALLEL_MIN_WORK
    if elements < 0:
        raise ValueError(f"set_parallel_threshold: elements must be >= 0, got {elements}")
    previous = PARALLEL_MIN_WORK
    PARALLEL_MIN_WORK = elements
    return previous


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(funk_openmp())


def max_threads():
    """Threads an OpenMP region may use (OMP_NUM_THREADS, else the core count)."""
    return funk_max_threads()


cdef inline int _threads(Py_ssize_t work) noexcept nogil:
    if work < PARALLEL_MIN_WORK:
        return 1
    return funk_max_threads()
