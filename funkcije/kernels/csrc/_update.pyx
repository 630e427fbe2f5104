# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled one-pass update rules behind funkcije.optim.

Each kernel reads w, dw and the rule's state and writes next_w and the new state into
fresh output arrays (the caller allocates them; the inputs are `const` and never
written), in one pass over flat, C-contiguous float32 or float64 arrays (fused type:
all arrays of one call share the dtype).

The arithmetic is the NumPy code of funkcije.optim, operation for operation: every
hyperparameter arrives as a C double computed in Python exactly as optim computes it
(e.g. `1.0 - beta1`), is converted once to the array dtype (what NumPy 2 does with a
Python float times a float32 array), and each product, sum, quotient and square root
is one IEEE operation in the array dtype, so the results equal the NumPy path's.
Subnormal results (|x| < the dtype's smallest normal number) are stored as +0.0, like
`optim._flush_subnormals`; next_w is computed from the state before that flush, as in
NumPy. NaN and inf pass through.

Arrays of at least `get_parallel_threshold()` elements are split over the OpenMP
threads (static schedule) when the extension was compiled with OpenMP; smaller ones
run on one thread. funkcije.optim imports funkcije.fast_layers first, which sets
OMP_WAIT_POLICY=PASSIVE before libgomp loads.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange

cdef extern from "<math.h>" nogil:
    float sqrtf(float)
    double sqrt(double)
    float fabsf(float)
    double fabs(double)

cdef extern from "<float.h>":
    float FLT_MIN
    double DBL_MIN

include "openmp.pxi"

# Below this many elements a kernel runs on one thread: a memory-bound pass over 128 Ki
# elements takes 0.1-0.3 ms, not much more than waking a sleeping (PASSIVE) thread can
# cost on a busy machine.
PARALLEL_MIN_WORK = 1 << 17


cdef inline floating _flush(floating x) noexcept nogil:
    """x, or +0.0 when |x| is below the smallest normal number (NaN passes through).
    Written as one comparison of |x| so that it compiles to a mask, not to branches
    that random signs mispredict (two comparisons of x made Adam 4x slower)."""
    if floating is float:
        return 0 if fabsf(x) < FLT_MIN else x
    else:
        return 0 if fabs(x) < DBL_MIN else x


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline int _check(Py_ssize_t n, Py_ssize_t m, str what) except -1:
    if m != n:
        raise ValueError(f"kernels._update: {what} has {m} elements, w has {n}")
    return 0


# Each kernel is a plain loop over raw pointers, `_*_span(lo, hi, ...)`, which GCC
# vectorises (a prange body with per-iteration variables, or indexing through the
# memoryview structs, is not vectorised and was 4x slower); large arrays are cut into
# one contiguous span per thread. Span starts are multiples of 16 elements, so every
# span has the array's vector alignment and neighbours share at most one cache line.


cdef inline Py_ssize_t _lo(Py_ssize_t k, Py_ssize_t n, int nt) noexcept nogil:
    if k >= nt:
        return n
    return ((n * k // nt) // 16) * 16


cdef inline void _sgd_span(Py_ssize_t lo, Py_ssize_t hi, const floating *w,
                           const floating *dw, floating *ow, floating lr) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        ow[i] = _flush(w[i] - lr * dw[i])


def sgd(const floating[::1] w, const floating[::1] dw, floating[::1] next_w,
        double learning_rate):
    """next_w = w - lr * dw."""
    cdef Py_ssize_t k, n = w.shape[0]
    cdef floating lr = <floating>learning_rate
    cdef int nt = _threads(n)
    _check(n, dw.shape[0], "dw")
    _check(n, next_w.shape[0], "next_w")
    if n == 0:
        return
    cdef const floating *pw = &w[0]
    cdef const floating *pg = &dw[0]
    cdef floating *ow = &next_w[0]
    with nogil:
        if nt == 1:
            _sgd_span(0, n, pw, pg, ow, lr)
        else:
            for k in prange(nt, schedule="static", num_threads=nt):
                _sgd_span(_lo(k, n, nt), _lo(k + 1, n, nt), pw, pg, ow, lr)


cdef inline void _momentum_span(Py_ssize_t lo, Py_ssize_t hi, const floating *w,
                                const floating *dw, const floating *vel, floating *ow,
                                floating *ov, floating lr, floating mu) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(lo, hi):
        v = mu * vel[i] - lr * dw[i]
        ow[i] = _flush(w[i] + v)
        ov[i] = _flush(v)


def sgd_momentum(const floating[::1] w, const floating[::1] dw, const floating[::1] velocity,
                 floating[::1] next_w, floating[::1] next_velocity,
                 double learning_rate, double momentum):
    """v = mu * velocity - lr * dw;  next_w = w + v."""
    cdef Py_ssize_t k, n = w.shape[0]
    cdef floating lr = <floating>learning_rate, mu = <floating>momentum
    cdef int nt = _threads(n)
    _check(n, dw.shape[0], "dw")
    _check(n, velocity.shape[0], "velocity")
    _check(n, next_w.shape[0], "next_w")
    _check(n, next_velocity.shape[0], "next_velocity")
    if n == 0:
        return
    cdef const floating *pw = &w[0]
    cdef const floating *pg = &dw[0]
    cdef const floating *pv = &velocity[0]
    cdef floating *ow = &next_w[0]
    cdef floating *ov = &next_velocity[0]
    with nogil:
        if nt == 1:
            _momentum_span(0, n, pw, pg, pv, ow, ov, lr, mu)
        else:
            for k in prange(nt, schedule="static", num_threads=nt):
                _momentum_span(_lo(k, n, nt), _lo(k + 1, n, nt), pw, pg, pv, ow, ov, lr, mu)


cdef inline void _rmsprop_span(Py_ssize_t lo, Py_ssize_t hi, const floating *w,
                               const floating *dw, const floating *cache, floating *ow,
                               floating *oc, floating lr, floating decay, floating omd,
                               floating eps) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, c
    for i in range(lo, hi):
        g = dw[i]
        c = decay * cache[i] + omd * (g * g)
        ow[i] = _flush(w[i] - (lr * g) / (_sqrt(c) + eps))
        oc[i] = _flush(c)


def rmsprop(const floating[::1] w, const floating[::1] dw, const floating[::1] cache,
            floating[::1] next_w, floating[::1] next_cache,
            double learning_rate, double decay_rate, double one_minus_decay, double epsilon):
    """c = decay * cache + (1 - decay) * (dw * dw);  next_w = w - (lr * dw) / (sqrt(c) + eps)."""
    cdef Py_ssize_t k, n = w.shape[0]
    cdef floating lr = <floating>learning_rate, decay = <floating>decay_rate
    cdef floating omd = <floating>one_minus_decay, eps = <floating>epsilon
    cdef int nt = _threads(n)
    _check(n, dw.shape[0], "dw")
    _check(n, cache.shape[0], "cache")
    _check(n, next_w.shape[0], "next_w")
    _check(n, next_cache.shape[0], "next_cache")
    if n == 0:
        return
    cdef const floating *pw = &w[0]
    cdef const floating *pg = &dw[0]
    cdef const floating *pc = &cache[0]
    cdef floating *ow = &next_w[0]
    cdef floating *oc = &next_cache[0]
    with nogil:
        if nt == 1:
            _rmsprop_span(0, n, pw, pg, pc, ow, oc, lr, decay, omd, eps)
        else:
            for k in prange(nt, schedule="static", num_threads=nt):
                _rmsprop_span(_lo(k, n, nt), _lo(k + 1, n, nt), pw, pg, pc, ow, oc,
                              lr, decay, omd, eps)


# Adam reads four arrays and writes three: too many pointer pairs for GCC to check
# for overlap at run time (its limit is 10), so one fused loop is not vectorised. It
# runs in blocks instead: the new moments of a block go to two stack buffers first
# (no overlap possible), then next_w and the flushed moments are written from them.
cdef enum:
    ADAM_BLOCK = 256


cdef inline void _adam_span(Py_ssize_t lo, Py_ssize_t hi, const floating *w,
                            const floating *dw, const floating *m, const floating *v,
                            floating *ow, floating *om, floating *ov, floating b1,
                            floating c1, floating b2, floating c2, floating k2,
                            floating eps, floating s) noexcept nogil:
    cdef Py_ssize_t i, j, nb, b = lo
    cdef floating g
    cdef floating mb[ADAM_BLOCK]
    cdef floating vb[ADAM_BLOCK]
    while b < hi:
        nb = min(<Py_ssize_t>ADAM_BLOCK, hi - b)
        for j in range(nb):
            g = dw[b + j]
            mb[j] = m[b + j] * b1 + g * c1
            vb[j] = (g * g) * c2 + v[b + j] * b2
        for j in range(nb):
            i = b + j
            ow[i] = _flush((mb[j] / (_sqrt(vb[j]) * k2 + eps)) * s + w[i])
            om[i] = _flush(mb[j])
            ov[i] = _flush(vb[j])
        b += nb


def adam(const floating[::1] w, const floating[::1] dw, const floating[::1] m,
         const floating[::1] v, floating[::1] next_w, floating[::1] next_m,
         floating[::1] next_v, double beta1, double one_minus_beta1, double beta2,
         double one_minus_beta2, double inv_sqrt_correction2, double epsilon,
         double neg_step):
    """As funkcije.optim.adam's NumPy code, per element:
        m'     = m * beta1 + dw * (1 - beta1)
        v'     = (dw * dw) * (1 - beta2) + v * beta2
        next_w = (m' / (sqrt(v') * inv_sqrt_correction2 + eps)) * neg_step + w
    with inv_sqrt_correction2 = 1 / sqrt(1 - beta2**t) and
    neg_step = -learning_rate / (1 - beta1**t), computed by the caller in double."""
    cdef Py_ssize_t k, n = w.shape[0]
    cdef floating b1 = <floating>beta1, c1 = <floating>one_minus_beta1
    cdef floating b2 = <floating>beta2, c2 = <floating>one_minus_beta2
    cdef floating k2 = <floating>inv_sqrt_correction2, eps = <floating>epsilon
    cdef floating s = <floating>neg_step
    cdef int nt = _threads(n)
    _check(n, dw.shape[0], "dw")
    _check(n, m.shape[0], "m")
    _check(n, v.shape[0], "v")
    _check(n, next_w.shape[0], "next_w")
    _check(n, next_m.shape[0], "next_m")
    _check(n, next_v.shape[0], "next_v")
    if n == 0:
        return
    cdef const floating *pw = &w[0]
    cdef const floating *pg = &dw[0]
    cdef const floating *pm = &m[0]
    cdef const floating *pv = &v[0]
    cdef floating *ow = &next_w[0]
    cdef floating *om = &next_m[0]
    cdef floating *ov = &next_v[0]
    with nogil:
        if nt == 1:
            _adam_span(0, n, pw, pg, pm, pv, ow, om, ov, b1, c1, b2, c2, k2, eps, s)
        else:
            for k in prange(nt, schedule="static", num_threads=nt):
                _adam_span(_lo(k, n, nt), _lo(k + 1, n, nt), pw, pg, pm, pv, ow, om, ov,
                           b1, c1, b2, c2, k2, eps, s)
