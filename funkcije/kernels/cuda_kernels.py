"""CUDA kernels for the layers whose Array API form makes many passes over memory on a
GPU: max pooling (one pass each way instead of one per window position), batch norm
(statistics in two passes, the normalisation with its ReLU in one; the backward's two
sums in one pass, dx in one), the convolution's steps around its cuBLAS GEMMs (the
columns in one pass instead of a padded copy and one per kernel position, the product's
layout with the bias in one, the images' gradient gathered in one), GELU (whose erf the
Array API lacks) and the update rules (one pass each).

The functions have the signatures and results of their namesakes in `xp_kernels`, which
`fast_layers` calls instead for CuPy arrays while `config.set(cuda_kernels=True)` (the
default; FUNKCIJE_CUDA_KERNELS=0 turns them off). The sources are compiled on first use
with CuPy's `RawModule` (NVRTC), once per process.

Every kernel is written so that each thread writes only its own outputs and reads no
other thread's: no shared memory, no atomics, no synchronisation. That keeps the results
deterministic (the sums' order is fixed) and lets the tests run the same source on the
CPU: compiled by the host C++ compiler with the launch grid walked in a loop
(`tests/test_cuda_kernels.py`), the wrappers below given NumPy arrays.

Sums are accumulated in double, as the compiled CPU kernels and `xp_kernels` do. Max
pooling keeps the reference's rules: the first maximum of a window on ties, NaN wins;
its argmax positions are flat plane positions h * W + w (int32), the format of the
other paths, so caches are interchangeable.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import backend
from . import xp_kernels as _xk

SOURCE = r"""
/* x != x: NaN, without relying on a math header under NVRTC (built without fast-math) */
#define IS_NAN(v) ((v) != (v))
/* Element indices are int while every array a launch touches has fewer than INDEX32
   elements (a grid-stride step then cannot overflow), long long beyond: a GPU's 64-bit
   division is emulated, many times the cost of the 32-bit one, and these kernels divide
   per element to find their coordinates. */
#ifndef INDEX32
#define INDEX32 (1LL << 30)
#endif
#define GRID_LOOP(I, i, n) for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (n); \
                                i += (I)blockDim.x * (I)gridDim.x)
#define BY_INDEX(span, body, ...) do { if ((span) < INDEX32) body<int>(__VA_ARGS__); \
                                       else body<long long>(__VA_ARGS__); } while (0)

template <typename I>
__device__ void max_pool_fwd_body(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int* __restrict__ arg,
        I total, int H, int W, int Ho, int Wo, int ph, int pw, int sh, int sw) {
    GRID_LOOP(I, i, total) {
        I plane = i / ((I)Ho * Wo);
        int r = (int)(i - plane * Ho * Wo);
        int oh = r / Wo, ow = r - oh * Wo;
        const scalar_t* xp = x + plane * H * W;
        int h0 = oh * sh, w0 = ow * sw;
        int pos = h0 * W + w0;
        scalar_t best = xp[pos];
        bool nan_seen = IS_NAN(best);
        for (int a = 0; a < ph; ++a) {
            for (int b = 0; b < pw; ++b) {
                int p = (h0 + a) * W + w0 + b;
                scalar_t v = xp[p];
                bool v_nan = IS_NAN(v);
                if (!nan_seen && (v > best || v_nan)) { best = v; pos = p; }
                nan_seen = nan_seen || v_nan;
            }
        }
        out[i] = best;
        arg[i] = pos;
    }
}

/* span: the input's element count (the largest array read) */
extern "C" __global__ void max_pool_fwd_SUFFIX(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
        int* __restrict__ arg, long long total, long long span, int H, int W, int Ho, int Wo, int ph, int pw,
        int sh, int sw) {
    BY_INDEX(span, max_pool_fwd_body, x, out, arg, total, H, W, Ho, Wo, ph, pw, sh, sw);
}

/* dx gathered: each input element sums, in the windows' raster order, the gradients of
   the windows whose maximum it is. */
template <typename I>
__device__ void max_pool_bwd_body(const scalar_t* __restrict__ dout, const int* __restrict__ arg,
        scalar_t* __restrict__ dx, I total, int H, int W, int Ho, int Wo, int ph, int pw, int sh, int sw) {
    GRID_LOOP(I, i, total) {
        I plane = i / ((I)H * W);
        int r = (int)(i - plane * H * W);
        int h = r / W, w = r - h * W;
        int oh0 = h >= ph ? (h - ph) / sh + 1 : 0, oh1 = min(h / sh, Ho - 1);
        int ow0 = w >= pw ? (w - pw) / sw + 1 : 0, ow1 = min(w / sw, Wo - 1);
        const I base = plane * Ho * Wo;
        scalar_t acc = 0;
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow) {
                I o = base + (I)oh * Wo + ow;
                if (arg[o] == r) acc += dout[o];
            }
        dx[i] = acc;
    }
}

extern "C" __global__ void max_pool_bwd_SUFFIX(const scalar_t* __restrict__ dout, const int* __restrict__ arg,
        scalar_t* __restrict__ dx, long long total, int H, int W, int Ho, int Wo, int ph, int pw, int sh, int sw) {
    BY_INDEX(total, max_pool_bwd_body, dout, arg, dx, total, H, W, Ho, Wo, ph, pw, sh, sw);
}

/* Per-channel partial sums of (N, C, HW) arrays: block (c, s) of the C * S blocks, thread t
   of T, sums images s, s + S, ... at positions t, t + T, ... and writes one partial of each
   sum to s1[(c * S + s) * T + t] (and s2). mode 0: s1 = sum x; mode 1: d = x - m[c],
   s1 = sum d, s2 = sum d*d; mode 2 (backward): g = dout (0 where relu and y <= 0),
   s1 = sum g, s2 = sum g * (x - m[c]). No division per element: long long indices. */
extern "C" __global__ void channel_sums_SUFFIX(const scalar_t* __restrict__ a, const scalar_t* __restrict__ x,
        const scalar_t* __restrict__ y, const scalar_t* __restrict__ m, double* __restrict__ s1,
        double* __restrict__ s2, int N, int C, long long HW, int S, int mode, int relu) {
    int c = blockIdx.x / S, s = blockIdx.x - c * S;
    int t = threadIdx.x, T = blockDim.x;
    double acc1 = 0.0, acc2 = 0.0;
    scalar_t mc = mode ? m[c] : (scalar_t)0;
    for (int n = s; n < N; n += S) {
        long long base = ((long long)n * C + c) * HW;
        for (long long k = t; k < HW; k += T) {
            long long e = base + k;
            if (mode == 0) {
                acc1 += (double)a[e];
            } else if (mode == 1) {
                scalar_t d = a[e] - mc;
                acc1 += (double)d;
                acc2 += (double)d * (double)d;
            } else {
                scalar_t g = (relu && !(y[e] > (scalar_t)0)) ? (scalar_t)0 : a[e];
                acc1 += (double)g;
                acc2 += (double)g * (double)(x[e] - mc);
            }
        }
    }
    long long o = ((long long)c * S + s) * T + t;
    s1[o] = acc1;
    if (mode) s2[o] = acc2;
}

/* out = (x - m[c]) * k[c] + b[c], then max(., 0) when relu (NaN passes, as in the reference). */
template <typename I>
__device__ void bn_apply_body(const scalar_t* __restrict__ x, const scalar_t* __restrict__ m,
        const scalar_t* __restrict__ k, const scalar_t* __restrict__ b, scalar_t* __restrict__ out,
        I total, int C, I HW, int relu) {
    GRID_LOOP(I, i, total) {
        int c = (int)((i / HW) % C);
        scalar_t v = (x[i] - m[c]) * k[c] + b[c];
        out[i] = (relu && v < (scalar_t)0) ? (scalar_t)0 : v;
    }
}

extern "C" __global__ void bn_apply_SUFFIX(const scalar_t* __restrict__ x, const scalar_t* __restrict__ m,
        const scalar_t* __restrict__ k, const scalar_t* __restrict__ b, scalar_t* __restrict__ out,
        long long total, int C, long long HW, int relu) {
    BY_INDEX(total, bn_apply_body, x, m, k, b, out, total, C, HW, relu);
}

/* dx = g * k[c] + (x - m[c]) * p[c] + q[c] (the last two terms in train mode only), g as in
   channel_sums' mode 2. */
template <typename I>
__device__ void bn_dx_body(const scalar_t* __restrict__ dout, const scalar_t* __restrict__ x,
        const scalar_t* __restrict__ y, const scalar_t* __restrict__ m, const scalar_t* __restrict__ k,
        const scalar_t* __restrict__ p, const scalar_t* __restrict__ q, scalar_t* __restrict__ dx,
        I total, int C, I HW, int train, int relu) {
    GRID_LOOP(I, i, total) {
        int c = (int)((i / HW) % C);
        scalar_t g = (relu && !(y[i] > (scalar_t)0)) ? (scalar_t)0 : dout[i];
        scalar_t v = g * k[c];
        if (train) v = v + (x[i] - m[c]) * p[c] + q[c];
        dx[i] = v;
    }
}

extern "C" __global__ void bn_dx_SUFFIX(const scalar_t* __restrict__ dout, const scalar_t* __restrict__ x,
        const scalar_t* __restrict__ y, const scalar_t* __restrict__ m, const scalar_t* __restrict__ k,
        const scalar_t* __restrict__ p, const scalar_t* __restrict__ q, scalar_t* __restrict__ dx,
        long long total, int C, long long HW, int train, int relu) {
    BY_INDEX(total, bn_dx_body, dout, x, y, m, k, p, q, dx, total, C, HW, train, relu);
}

/* i = (outer * B + b) * A + a, A and B the two innermost extents: sets a and b, returns outer */
template <typename I>
__device__ I unravel2(I i, int A, int B, int& a, int& b) {
    I q = i / A;
    a = (int)(i - q * A);
    I outer = q / B;
    b = (int)(q - outer * B);
    return outer;
}

/* Convolution columns (G, K, nb * P) of images x (nb, C, H, W), zero padded: row
   c * HH * WW + kh * WW + kw (the order of w.reshape(F, K), groups stacked), column n * P +
   oh * Wo + ow. One thread per (c, n, oh, ow) writes that column's HH * WW rows of channel
   c: its coordinates are found once for the whole kernel window. */
template <typename I>
__device__ void im2col_body(const scalar_t* __restrict__ x, scalar_t* __restrict__ cols, I total, int nb, int C,
        int H, int W, int HH, int WW, int Ho, int Wo, int pad_h, int pad_w, int sh, int sw, int dh, int dw) {
    const I P = (I)Ho * Wo, row_step = (I)nb * P;
    GRID_LOOP(I, i, total) {
        int ow, oh;
        I cn = unravel2(i, Wo, Ho, ow, oh);  /* c * nb + n */
        I c = cn / nb;
        int n = (int)(cn - c * nb);
        const scalar_t* xc = x + ((I)n * C + c) * H * W;
        scalar_t* col = cols + (c * HH * WW * nb + n) * P + (I)oh * Wo + ow;
        int h0 = oh * sh - pad_h, w0 = ow * sw - pad_w;
        for (int kh = 0; kh < HH; ++kh) {
            int h = h0 + kh * dh;
            bool h_in = h >= 0 && h < H;
            for (int kw = 0; kw < WW; ++kw) {
                int w = w0 + kw * dw;
                *col = (h_in && w >= 0 && w < W) ? xc[(I)h * W + w] : (scalar_t)0;
                col += row_step;
            }
        }
    }
}

/* span: the larger of the images' and the columns' element counts */
extern "C" __global__ void im2col_SUFFIX(const scalar_t* __restrict__ x, scalar_t* __restrict__ cols,
        long long total, long long span, int nb, int C, int H, int W, int HH, int WW, int Ho, int Wo,
        int pad_h, int pad_w, int sh, int sw, int dh, int dw) {
    BY_INDEX(span, im2col_body, x, cols, total, nb, C, H, W, HH, WW, Ho, Wo, pad_h, pad_w, sh, sw, dh, dw);
}

/* The images' gradient dx (nb, C, H, W) gathered from the columns' gradient dcols (layout
   of im2col): each element sums, kernel positions in raster order, the columns entries
   that read it. */
template <typename I>
__device__ void col2im_body(const scalar_t* __restrict__ dcols, scalar_t* __restrict__ dx, I total, int nb, int C,
        int H, int W, int HH, int WW, int Ho, int Wo, int pad_h, int pad_w, int sh, int sw, int dh, int dw) {
    const I P = (I)Ho * Wo, row_step = (I)nb * P;
    GRID_LOOP(I, i, total) {
        int w, h;
        I nc = unravel2(i, W, H, w, h);  /* n * C + c */
        I n = nc / C;
        int c = (int)(nc - n * C);
        const scalar_t* d = dcols + ((I)c * HH * WW * nb + n) * P;
        scalar_t acc = 0;
        for (int kh = 0; kh < HH; ++kh) {
            int hp = h + pad_h - kh * dh;
            int oh = hp / sh;
            bool h_in = hp >= 0 && hp == oh * sh && oh < Ho;
            for (int kw = 0; kw < WW; ++kw) {
                int wp = w + pad_w - kw * dw;
                int ow = wp / sw;
                if (h_in && wp >= 0 && wp == ow * sw && ow < Wo) acc += d[(I)oh * Wo + ow];
                d += row_step;
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void col2im_SUFFIX(const scalar_t* __restrict__ dcols, scalar_t* __restrict__ dx,
        long long total, long long span, int nb, int C, int H, int W, int HH, int WW, int Ho, int Wo,
        int pad_h, int pad_w, int sh, int sw, int dh, int dw) {
    BY_INDEX(span, col2im_body, dcols, dx, total, nb, C, H, W, HH, WW, Ho, Wo, pad_h, pad_w, sh, sw, dh, dw);
}

/* out (nb, F, P) = res (F, nb, P), the GEMM's product, plus b[f]. */
template <typename I>
__device__ void conv_out_body(const scalar_t* __restrict__ res, const scalar_t* __restrict__ b,
        scalar_t* __restrict__ out, I total, int nb, int F, I P) {
    GRID_LOOP(I, i, total) {
        I q = i / P;
        I p = i - q * P;
        I n = q / F;
        int f = (int)(q - n * F);
        out[i] = res[((I)f * nb + n) * P + p] + b[f];
    }
}

extern "C" __global__ void conv_out_SUFFIX(const scalar_t* __restrict__ res, const scalar_t* __restrict__ b,
        scalar_t* __restrict__ out, long long total, int nb, int F, long long P) {
    BY_INDEX(total, conv_out_body, res, b, out, total, nb, F, P);
}

/* GELU, Phi in double for either dtype as on the CPU: x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2,
   or the tanh form; backward dout times the slope. */
__device__ double gelu_phi(double v, int tanh_form) {
    if (tanh_form) return 0.5 * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    return 0.5 * erfc(-v * 0.70710678118654752440);
}

__device__ double gelu_slope(double v, int tanh_form) {
    if (tanh_form) {
        double th = tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v));
        return 0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * 0.79788456080286535588 * (1.0 + 3.0 * 0.044715 * v * v);
    }
    return 0.5 * erfc(-v * 0.70710678118654752440) + v * 0.39894228040143267794 * exp(-0.5 * v * v);
}

extern "C" __global__ void gelu_fwd_SUFFIX(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
        long long total, int tanh_form) {
    GRID_LOOP(long long, i, total) {
        double v = (double)x[i];
        out[i] = (scalar_t)(v * gelu_phi(v, tanh_form));
    }
}

extern "C" __global__ void gelu_bwd_SUFFIX(const scalar_t* __restrict__ dout, const scalar_t* __restrict__ x,
        scalar_t* __restrict__ dx, long long total, int tanh_form) {
    GRID_LOOP(long long, i, total) {
        dx[i] = (scalar_t)((double)dout[i] * gelu_slope((double)x[i], tanh_form));
    }
}

/* The update rules (funkcije.optim), each in one pass over w, dw and the state: the NumPy
   code's operations in its order and in the array's dtype; results (next_w and the new
   state) with magnitude below tiny, the dtype's smallest normal, flushed to zero as
   optim's _flush_subnormals does. */
#define FLUSH(v) (((v) < tiny && (v) > -tiny) ? (scalar_t)0 : (v))
#define ELEMENTS(i, n) GRID_LOOP(long long, i, n)

extern "C" __global__ void upd_sgd_SUFFIX(const scalar_t* __restrict__ w, const scalar_t* __restrict__ dw,
        scalar_t* __restrict__ next_w, long long total, scalar_t lr, scalar_t tiny) {
    ELEMENTS(i, total) {
        scalar_t n = w[i] - lr * dw[i];
        next_w[i] = FLUSH(n);
    }
}

/* velocity = momentum * velocity - lr * dw; next_w = w + velocity */
extern "C" __global__ void upd_momentum_SUFFIX(const scalar_t* __restrict__ w, const scalar_t* __restrict__ dw,
        const scalar_t* __restrict__ vel, scalar_t* __restrict__ next_w, scalar_t* __restrict__ next_vel,
        long long total, scalar_t lr, scalar_t mu, scalar_t tiny) {
    ELEMENTS(i, total) {
        scalar_t v = mu * vel[i] - lr * dw[i];
        scalar_t n = w[i] + v;
        next_vel[i] = FLUSH(v);
        next_w[i] = FLUSH(n);
    }
}

/* cache = decay * cache + (1 - decay) * dw^2; next_w = w - lr * dw / (sqrt(cache) + eps) */
extern "C" __global__ void upd_rmsprop_SUFFIX(const scalar_t* __restrict__ w, const scalar_t* __restrict__ dw,
        const scalar_t* __restrict__ cache, scalar_t* __restrict__ next_w, scalar_t* __restrict__ next_cache,
        long long total, scalar_t lr, scalar_t decay, scalar_t keep, scalar_t eps, scalar_t tiny) {
    ELEMENTS(i, total) {
        scalar_t g = dw[i];
        scalar_t c = decay * cache[i] + keep * (g * g);
        scalar_t n = w[i] - lr * g / (sqrt(c) + eps);
        next_cache[i] = FLUSH(c);
        next_w[i] = FLUSH(n);
    }
}

/* Adam on w' = w * wscale (AdamW's decoupled decay; 1 for Adam): m = b1 m + (1 - b1) dw,
   v = b2 v + (1 - b2) dw^2, next_w = w' - step * (m / (sqrt(v) * vcorr + eps)), where
   vcorr = 1 / sqrt(1 - b2^t) and step = lr / (1 - b1^t). */
extern "C" __global__ void upd_adam_SUFFIX(const scalar_t* __restrict__ w, const scalar_t* __restrict__ dw,
        const scalar_t* __restrict__ m, const scalar_t* __restrict__ v, scalar_t* __restrict__ next_w,
        scalar_t* __restrict__ next_m, scalar_t* __restrict__ next_v, long long total, scalar_t wscale,
        scalar_t b1, scalar_t keep1, scalar_t b2, scalar_t keep2, scalar_t vcorr, scalar_t eps, scalar_t step,
        scalar_t tiny) {
    ELEMENTS(i, total) {
        scalar_t g = dw[i];
        scalar_t wi = wscale == (scalar_t)1 ? w[i] : w[i] * wscale;
        scalar_t mi = b1 * m[i] + keep1 * g;
        scalar_t vi = b2 * v[i] + keep2 * (g * g);
        scalar_t n = wi - step * (mi / (sqrt(vi) * vcorr + eps));
        next_m[i] = FLUSH(mi);
        next_v[i] = FLUSH(vi);
        next_w[i] = FLUSH(n);
    }
}

/* Nesterov momentum in PyTorch's form: g = dw + coupled * w, velocity = mu velocity + g,
   next_w = w - lr * (g + mu velocity + decoupled * w) (sgd_nesterov: coupled weight decay;
   sgdw: decoupled). */
extern "C" __global__ void upd_nesterov_SUFFIX(const scalar_t* __restrict__ w, const scalar_t* __restrict__ dw,
        const scalar_t* __restrict__ vel, scalar_t* __restrict__ next_w, scalar_t* __restrict__ next_vel,
        long long total, scalar_t lr, scalar_t mu, scalar_t coupled, scalar_t decoupled, scalar_t tiny) {
    ELEMENTS(i, total) {
        scalar_t wi = w[i];
        scalar_t g = coupled != (scalar_t)0 ? dw[i] + coupled * wi : dw[i];
        scalar_t v = vel[i] * mu + g;
        scalar_t st = v * mu + g;
        if (decoupled != (scalar_t)0) st = st + decoupled * wi;
        scalar_t n = st * (-lr) + wi;
        next_vel[i] = FLUSH(v);
        next_w[i] = FLUSH(n);
    }
}
"""

_TYPES = {"float32": "float", "float64": "double"}
BLOCK = 256


def source_for(dtype_name: str) -> str:
    """The kernels' source for one dtype ("float32" or "float64"): names end in _float / _double."""
    ctype = _TYPES[dtype_name]
    return SOURCE.replace("scalar_t", ctype).replace("SUFFIX", ctype)


@functools.lru_cache(maxsize=None)
def _module(dtype_name):
    cp = backend.require_cupy("cuda_kernels")
    return cp.RawModule(code=source_for(dtype_name))


def _cuda_launch(name, dtype_name, grid, block, args):
    """Run kernel `name` for `dtype_name` on the current CUDA device (CuPy arrays; ints
    passed as the C types of the kernels' signatures: see `_c_args`)."""
    try:
        fn = _module(dtype_name).get_function(f"{name}_{_TYPES[dtype_name]}")
    except Exception as exc:  # CuPy compiles on first use: its CompileException carries NVRTC's log
        if type(exc).__name__ != "CompileException":
            raise
        raise RuntimeError(
            f"funkcije's CUDA kernels ({dtype_name}) did not compile on this GPU/CUDA: {exc}\n"
            "config.set(cuda_kernels=False) or FUNKCIJE_CUDA_KERNELS=0 runs the same layers "
            "without them (their Array API form)") from exc
    fn((grid,), (block,), tuple(_c_args(args, dtype_name)))


def _c_args(args, dtype_name):
    """The launch arguments, Python ints as the kernels' int or long long and _Real as
    their scalar_t (numpy scalars)."""
    out = []
    for a in args:
        if isinstance(a, _Real):
            out.append(np.dtype(dtype_name).type(a))
        elif isinstance(a, _LL):
            out.append(np.int64(a))
        elif isinstance(a, (bool, int, np.integer)):
            out.append(np.int32(a))
        else:
            out.append(a)
    return out


class _LL(int):
    """An int passed as `long long` (element counts): the rest are `int`."""


class _Real(float):
    """A float passed as the kernel's scalar_t: float32 for float kernels, float64 for double."""


# The launcher: CuPy's, or (tests) the host compiler's build of the same source.
_launch = _cuda_launch


def _grid(total):
    return min(-(-int(total) // BLOCK), 65535 * 4)


def _run(name, dtype_name, grid, block, args):
    """`_launch`, except for an empty grid (nothing to compute; CUDA refuses a launch of no blocks)."""
    if grid:
        _launch(name, dtype_name, grid, block, args)


def _contiguous(a):
    return backend.namespace(a).ascontiguousarray(a)


# ----------------------------------------------------------------------------- max pooling


def max_pool_forward(x, g):
    """(out (N, C, H', W'), arg int32 flat plane positions) of x (N, C, H, W), geometry g."""
    xp = backend.array_api(x)
    x = _contiguous(x)
    N, C, H, W = x.shape
    out = xp.empty((N, C, g.out_h, g.out_w), dtype=x.dtype)
    arg = xp.empty(out.shape, dtype=xp.int32)
    total = out.size
    _run("max_pool_fwd", backend.dtype_name(x), _grid(total), BLOCK,
        (x, out, arg, _LL(total), _LL(x.size), H, W, g.out_h, g.out_w, g.pool_height, g.pool_width,
         *g.stride))
    return out, arg


def max_pool_backward(dout, arg, x_shape, g):
    """dx (x_shape): each window's gradient at its argmax; overlapping windows add up."""
    xp = backend.array_api(dout)
    dout, arg = _contiguous(dout), _contiguous(arg)
    N, C, H, W = x_shape
    dx = xp.empty(tuple(x_shape), dtype=dout.dtype)
    total = dx.size
    _run("max_pool_bwd", backend.dtype_name(dout), _grid(total), BLOCK,
        (dout, arg, dx, _LL(total), H, W, g.out_h, g.out_w, g.pool_height, g.pool_width, *g.stride))
    return dx


# ----------------------------------------------------------------------------- batch norm


def _sum_layout(N, C, HW):
    """(S, T): images split over S blocks per channel, T threads each; about 1024 blocks
    in all, so that a few channels still fill the GPU."""
    T = BLOCK if HW >= BLOCK else max(32, 1 << max(0, int(HW - 1).bit_length()))
    S = max(1, min(N, -(-1024 // max(1, C))))
    return S, T


def _channel_sums(mode, a, x, y, m, relu):
    """Per-channel float64 sums (s1, s2) of channel_sums' `mode` over (N, C, H, W) arrays."""
    xp = backend.array_api(a)
    N, C, H, W = a.shape
    S, T = _sum_layout(N, C, H * W)
    s1 = xp.empty((C * S * T,), dtype=xp.float64)
    s2 = xp.empty((C * S * T,), dtype=xp.float64) if mode else s1
    a_ = _contiguous(a)
    _run("channel_sums", backend.dtype_name(a), C * S, T,
        (a_, a_ if x is None else _contiguous(x), a_ if y is None else _contiguous(y),
         a_ if m is None else m, s1, s2, N, C, _LL(H * W), S, mode, int(relu)))
    total = lambda s: xp.sum(xp.reshape(s, (C, S * T)), axis=1)  # noqa: E731
    return total(s1), (total(s2) if mode else None)


def bn_forward(x, gamma, beta, eps, relu, mean=None, var=None):
    """As `xp_kernels.bn_forward`: (out, mean, var, inv_std), statistics float64 (C,)."""
    xp = backend.array_api(x, gamma, beta)
    dt = x.dtype
    x = _contiguous(x)
    N, C, H, W = x.shape
    if mean is None:
        M = N * H * W
        mean = _channel_sums(0, x, None, None, None, False)[0] / M
        shift, sq = _channel_sums(1, x, None, None, _contiguous(xp.astype(mean, dt)), False)
        shift = shift / M  # mean - its rounding to x's dtype
        var = sq / M - shift * shift
    else:
        mean, var = xp.astype(mean, xp.float64), xp.astype(var, xp.float64)
    inv_std = 1.0 / xp.sqrt(var + eps)
    scale = xp.astype(xp.astype(gamma, xp.float64) * inv_std, dt)
    out = xp.empty(x.shape, dtype=dt)
    _run("bn_apply", backend.dtype_name(x), _grid(out.size), BLOCK,
        (x, _contiguous(xp.astype(mean, dt)), _contiguous(scale), _contiguous(xp.astype(beta, dt)), out,
         _LL(out.size), C, _LL(H * W), int(relu)))
    return out, mean, var, inv_std


def bn_backward(dout, x, y, mean, inv_std, gamma, train, relu):
    """As `xp_kernels.bn_backward`: (dx, dgamma, dbeta)."""
    xp = backend.array_api(dout, x, gamma)
    dt = x.dtype
    dout, x = _contiguous(dout), _contiguous(x)
    N, C, H, W = x.shape
    M = N * H * W
    mean_t = _contiguous(xp.astype(mean, dt))
    dbeta, dgamma = _channel_sums(2, dout, x, y if relu else None, mean_t, relu)
    dgamma = dgamma * inv_std
    k = xp.astype(gamma, xp.float64) * inv_std
    p = -k * inv_std * dgamma / M
    q = -k * dbeta / M
    dx = xp.empty(x.shape, dtype=dt)
    _run("bn_dx", backend.dtype_name(x), _grid(dx.size), BLOCK,
        (dout, x, _contiguous(y) if relu else dout, mean_t, _contiguous(xp.astype(k, dt)),
         _contiguous(xp.astype(p, dt)), _contiguous(xp.astype(q, dt)), dx,
         _LL(dx.size), C, _LL(H * W), int(bool(train)), int(relu)))
    return dx, xp.astype(dgamma, dt), xp.astype(dbeta, dt)


# ----------------------------------------------------------------------------- convolution


class ConvSteps(_xk.ConvSteps):
    """`xp_kernels.ConvSteps` as one kernel each: the columns built in one pass over the
    images, the product laid out with its bias in one, the images' gradient gathered in
    one (no zeroed padded buffer, no pass per kernel position)."""

    @staticmethod
    def _geometry(x_shape, HH, WW, g):
        nb, C, H, W = x_shape
        return (nb, C, H, W, HH, WW, g.out_h, g.out_w, *g.pad, *g.stride, *g.dilation)

    @staticmethod
    def columns(xp, x, G, HH, WW, g):
        x = _contiguous(x)
        nb, C = x.shape[:2]
        P = g.out_h * g.out_w
        cols = xp.empty((G, C // G * HH * WW, nb * P), dtype=x.dtype)
        total = C * nb * P
        _run("im2col", backend.dtype_name(x), _grid(total), BLOCK,
            (x, cols, _LL(total), _LL(max(x.size, cols.size)), *ConvSteps._geometry(x.shape, HH, WW, g)))
        return cols

    @staticmethod
    def outputs(xp, res, b, out, n0, n1):
        view = out[n0:n1, ...]
        _run("conv_out", backend.dtype_name(out), _grid(view.size), BLOCK,
            (_contiguous(res), _contiguous(b), view, _LL(view.size), n1 - n0, out.shape[1],
             _LL(out.shape[2] * out.shape[3])))

    @staticmethod
    def image_grads(xp, dcols, dx, n0, n1, G, HH, WW, g):
        view = dx[n0:n1, ...]
        dcols = _contiguous(dcols)
        _run("col2im", backend.dtype_name(dx), _grid(view.size), BLOCK,
            (dcols, view, _LL(view.size), _LL(max(view.size, dcols.size)),
             *ConvSteps._geometry(view.shape, HH, WW, g)))


def conv_forward(x, w, b, g):
    """As `xp_kernels.conv_forward`, its memory-bound steps as CUDA kernels."""
    return _xk.conv_forward(x, w, b, g, steps=ConvSteps)


def conv_backward(x, w, dout, g, need_dx=True):
    """As `xp_kernels.conv_backward`, its memory-bound steps as CUDA kernels."""
    return _xk.conv_backward(x, w, dout, g, need_dx, steps=ConvSteps)


# ----------------------------------------------------------------------------- update rules


def _update(name, w, dw, state, hyper):
    """Kernel upd_<name> over w (any shape), dw and the state arrays: (next_w, *next_state),
    new arrays of w's dtype; `hyper` the rule's constants as Python floats."""
    xp = backend.array_api(w)
    w, dw, state = _contiguous(w), _contiguous(dw), [_contiguous(s) for s in state]
    outs = [xp.empty(w.shape, dtype=w.dtype) for _ in range(1 + len(state))]
    tiny = float(xp.finfo(w.dtype).smallest_normal)
    _run(f"upd_{name}", backend.dtype_name(w), _grid(w.size), BLOCK,
         (w, dw, *state, *outs, _LL(w.size), *(_Real(h) for h in hyper), _Real(tiny)))
    return tuple(outs)


def sgd(w, dw, lr):
    return _update("sgd", w, dw, (), (lr,))[0]


def sgd_momentum(w, dw, velocity, lr, momentum):
    return _update("momentum", w, dw, (velocity,), (lr, momentum))


def rmsprop(w, dw, cache, lr, decay, eps):
    return _update("rmsprop", w, dw, (cache,), (lr, decay, 1.0 - decay, eps))


def adam(w, dw, m, v, lr, beta1, beta2, eps, t, wscale=1.0):
    """Adam's step t (1 for the first) on w * wscale (AdamW's decoupled decay)."""
    return _update("adam", w, dw, (m, v), (wscale, beta1, 1.0 - beta1, beta2, 1.0 - beta2,
                                            1.0 / math.sqrt(1.0 - beta2**t), eps, lr / (1.0 - beta1**t)))


def nesterov(w, dw, velocity, lr, momentum, coupled, decoupled):
    return _update("nesterov", w, dw, (velocity,), (lr, momentum, coupled, decoupled))


# ----------------------------------------------------------------------------- GELU


def gelu_forward(x, tanh_form):
    """As `xp_kernels.gelu_forward`, both forms, in one pass."""
    xp = backend.array_api(x)
    x = _contiguous(x)
    out = xp.empty(x.shape, dtype=x.dtype)
    _run("gelu_fwd", backend.dtype_name(x), _grid(x.size), BLOCK, (x, out, _LL(x.size), int(bool(tanh_form))))
    return out


def gelu_backward(dout, x, tanh_form):
    """As `xp_kernels.gelu_backward`."""
    xp = backend.array_api(dout, x)
    dout, x = _contiguous(dout), _contiguous(x)
    dx = xp.empty(x.shape, dtype=x.dtype)
    _run("gelu_bwd", backend.dtype_name(x), _grid(x.size), BLOCK, (dout, x, dx, _LL(x.size), int(bool(tanh_form))))
    return dx
