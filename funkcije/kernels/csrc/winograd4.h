/* Winograd F(4x4, 3x3) transforms (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016): a 3x3, stride-1 convolution on 6x6 input tiles overlapping
 * by two, Y = A^T [(G g G^T) . (B^T d B)] A, with interpolation points 0, 1, -1, 2, -2
 * and infinity:
 *     B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
 *            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
 *     G   = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6],
 *            [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]
 *     A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
 * Summed over channels the 36 elementwise products are 36 GEMMs, 36 multiplies per 4x4
 * output block and channel against F(2x2, 3x3)'s 64 and im2col's 144. The weight
 * gradient by bilinearity: dg = G^T [sum over tiles (A e A^T) . (B^T d B)] G for the
 * 4x4 blocks e of dout.
 *
 * Layout as the F(2x2, 3x3) kernels of _compiled.pyx: tile (ti, tj) of a plane covers
 * output rows 4 ti .. 4 ti + 3 (th = ceil(Ho / 4) tile rows); transformed arrays hold
 * element xi = 6 a + b of every tile at xi * stride + tile.
 */
#ifndef FUNK_WINOGRAD4_H
#define FUNK_WINOGRAD4_H
#include <stddef.h>
#include <stdlib.h>

/* tiles per block of the vectorised output transform: 16 values a tile on the stack */
#define FUNK_W4_BLOCK 128

#define W4T float
#define W4S f
#include "winograd4_t.h"
#undef W4T
#undef W4S

#define W4T double
#define W4S d
#include "winograd4_t.h"
#undef W4T
#undef W4S

#endif
