/* Winograd F(4x4, 3x3) plane kernels for one element type; included by winograd4.h
 * with W4T (the type) and W4S (the name suffix) defined. The matrices and tile layout
 * are described there. */

#define W4_CAT2(a, b) a##_##b
#define W4_CAT(a, b) W4_CAT2(a, b)
#define W4_NAME(name) W4_CAT(name, W4S)

/* r = B^T d for one column d (6 values, stride ds) of an input tile */
static inline void W4_NAME(funk_w4_bt)(const W4T *d, ptrdiff_t ds, W4T *r, ptrdiff_t rs)
{
    W4T d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    r[0] = 4 * d0 - 5 * d2 + d4;
    r[rs] = d3 + d4 - 4 * (d1 + d2);
    r[2 * rs] = 4 * (d1 - d2) + d4 - d3;
    r[3 * rs] = 2 * (d3 - d1) + d4 - d2;
    r[4 * rs] = 2 * (d1 - d3) + d4 - d2;
    r[5 * rs] = 4 * d1 - 5 * d3 + d5;
}

/* r = A^T m for one column m (6 values) of the products */
static inline void W4_NAME(funk_w4_at)(const W4T *m, ptrdiff_t ms, W4T *r, ptrdiff_t rs)
{
    W4T m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms], m5 = m[5 * ms];
    W4T p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    r[0] = m0 + p12 + p34;
    r[rs] = d12 + 2 * d34;
    r[2 * rs] = p12 + 4 * p34;
    r[3 * rs] = d12 + 8 * d34 + m5;
}

/* r = G g for one column g (3 values) of a filter */
static inline void W4_NAME(funk_w4_g)(const W4T *g, ptrdiff_t gs, W4T *r, ptrdiff_t rs)
{
    W4T g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
    r[0] = g0 / 4;
    r[rs] = -(g0 + g1 + g2) / 6;
    r[2 * rs] = -(g0 - g1 + g2) / 6;
    r[3 * rs] = g0 / 24 + g1 / 12 + g2 / 6;
    r[4 * rs] = g0 / 24 - g1 / 12 + g2 / 6;
    r[5 * rs] = g2;
}

/* r = A e for one column e (4 values) of an upstream-gradient block (A = (A^T)^T) */
static inline void W4_NAME(funk_w4_a)(const W4T *e, ptrdiff_t es, W4T *r, ptrdiff_t rs)
{
    W4T e0 = e[0], e1 = e[es], e2 = e[2 * es], e3 = e[3 * es];
    W4T p02 = e0 + e2, p13 = e1 + e3;
    r[0] = e0;
    r[rs] = p02 + p13;
    r[2 * rs] = p02 - p13;
    r[3 * rs] = e0 + 2 * e1 + 4 * e2 + 8 * e3;
    r[4 * rs] = e0 - 2 * e1 + 4 * e2 - 8 * e3;
    r[5 * rs] = e3;
}

/* r = G^T z for one column z (6 values) of a weight-gradient product */
static inline void W4_NAME(funk_w4_gt)(const W4T *z, ptrdiff_t zs, W4T *r, ptrdiff_t rs)
{
    W4T z0 = z[0], z1 = z[zs], z2 = z[2 * zs], z3 = z[3 * zs], z4 = z[4 * zs], z5 = z[5 * zs];
    r[0] = z0 / 4 - (z1 + z2) / 6 + (z3 + z4) / 24;
    r[rs] = (z2 - z1) / 6 + (z3 - z4) / 12;
    r[2 * rs] = (z3 + z4 - z1 - z2) / 6 + z5;
}

/* V[xi * vs + tile] = (B^T d B)[xi / 6, xi % 6] for every 6x6 tile d of the plane
 * (H, W), zero outside it; tile (ti, tj) starts at row 4 ti - ph, column 4 tj - pw.
 * Each tile row's six input rows are first copied, zero-padded, into rows of 4 tw + 2
 * (the caller's buffer r, 6 * (4 tw + 2) values), so every tile of the row is read
 * alike and the transform is one loop over tiles the compiler vectorises. */
static inline void W4_NAME(funk_w4_in_tiles)(const W4T *r, ptrdiff_t rw, ptrdiff_t nt, W4T *V, ptrdiff_t vs)
{
    for (ptrdiff_t t = 0; t < nt; t++) {
        W4T d[36], s[36];
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 6; b++)
                d[6 * a + b] = r[a * rw + 4 * t + b];
        for (int b = 0; b < 6; b++)  /* s = B^T d, column by column */
            W4_NAME(funk_w4_bt)(d + b, 6, s + b, 6);
        for (int a = 0; a < 6; a++)  /* V = s B: row a of s through B^T */
            W4_NAME(funk_w4_bt)(s + 6 * a, 1, V + (6 * a) * vs + t, vs);
    }
}

/* returns -1 when a plane wider than 1024 columns finds no memory for its row copy */
static inline int W4_NAME(funk_w4_in_plane)(const W4T *x, ptrdiff_t H, ptrdiff_t W, W4T *V, ptrdiff_t vs,
                                            ptrdiff_t th, ptrdiff_t tw, ptrdiff_t ph, ptrdiff_t pw)
{
    W4T local[6 * (4 * 256 + 2)];
    ptrdiff_t rw = 4 * tw + 2;
    W4T *r = tw <= 256 ? local : (W4T *)malloc(6 * rw * sizeof(W4T));
    if (r == NULL)
        return -1;
    for (ptrdiff_t ti = 0; ti < th; ti++) {
        for (int a = 0; a < 6; a++) {
            ptrdiff_t h = 4 * ti - ph + a;
            W4T *ra = r + a * rw;
            if (h < 0 || h >= H) {
                for (ptrdiff_t j = 0; j < rw; j++)
                    ra[j] = 0;
                continue;
            }
            const W4T *xr = x + h * W;
            for (ptrdiff_t j = 0; j < rw; j++) {
                ptrdiff_t w = j - pw;
                ra[j] = (w >= 0 && w < W) ? xr[w] : 0;
            }
        }
        W4_NAME(funk_w4_in_tiles)(r, rw, tw, V + ti * tw, vs);
    }
    if (r != local)
        free(r);
    return 0;
}

/* out plane (Ho, Wo) = A^T m A + bias for every tile's 36 products m = M[xi * ms + tile];
 * positions past the plane are dropped. Whole tile rows are transformed in blocks of up
 * to FUNK_W4_BLOCK tiles by a loop over tiles that the compiler vectorises (36 contiguous
 * streams in), then scattered row by row into the plane. */
static inline void W4_NAME(funk_w4_out_tiles)(const W4T *M, ptrdiff_t ms, ptrdiff_t nt, W4T *y, ptrdiff_t yt)
{
    for (ptrdiff_t t = 0; t < nt; t++) {
        W4T s[24];
        for (int b = 0; b < 6; b++)  /* s (4x6) = A^T m */
            W4_NAME(funk_w4_at)(M + b * ms + t, 6 * ms, s + b, 6);
        for (int a = 0; a < 4; a++)  /* y = s A, element 4 a + b of tile t at y[(4 a + b) * yt + t] */
            W4_NAME(funk_w4_at)(s + 6 * a, 1, y + 4 * a * yt + t, yt);
    }
}

static inline void W4_NAME(funk_w4_out_plane)(const W4T *M, ptrdiff_t ms, W4T *out, ptrdiff_t Ho, ptrdiff_t Wo,
                                              ptrdiff_t th, ptrdiff_t tw, W4T bias)
{
    W4T y[16 * FUNK_W4_BLOCK];
    ptrdiff_t rows_blk = tw <= FUNK_W4_BLOCK ? FUNK_W4_BLOCK / tw : 0;
    if (rows_blk == 0) {  /* a row wider than a block: one tile at a time */
        ptrdiff_t tile = 0;
        for (ptrdiff_t ti = 0; ti < th; ti++)
            for (ptrdiff_t tj = 0; tj < tw; tj++, tile++) {
                W4_NAME(funk_w4_out_tiles)(M + tile, ms, 1, y, 1);
                for (int a = 0; a < 4 && 4 * ti + a < Ho; a++)
                    for (int b = 0; b < 4 && 4 * tj + b < Wo; b++)
                        out[(4 * ti + a) * Wo + 4 * tj + b] = y[4 * a + b] + bias;
            }
        return;
    }
    for (ptrdiff_t tb0 = 0; tb0 < th; tb0 += rows_blk) {
        ptrdiff_t tb1 = tb0 + rows_blk < th ? tb0 + rows_blk : th;
        ptrdiff_t nt = (tb1 - tb0) * tw;
        W4_NAME(funk_w4_out_tiles)(M + tb0 * tw, ms, nt, y, FUNK_W4_BLOCK);
        for (ptrdiff_t ti = tb0; ti < tb1; ti++) {
            ptrdiff_t q = (ti - tb0) * tw;
            for (int a = 0; a < 4 && 4 * ti + a < Ho; a++) {
                W4T *row = out + (4 * ti + a) * Wo;
                for (int b = 0; b < 4; b++) {
                    const W4T *ya = y + (4 * a + b) * FUNK_W4_BLOCK + q;
                    for (ptrdiff_t tj = 0; tj < tw && 4 * tj + b < Wo; tj++)
                        row[4 * tj + b] = ya[tj] + bias;
                }
            }
        }
    }
}

/* Y[xi * ys + tile] = (A e A^T)[xi / 6, xi % 6] for every 4x4 block e of the upstream
 * gradient plane (Ho, Wo), zero past it */
static inline void W4_NAME(funk_w4_dout_plane)(const W4T *dout, ptrdiff_t Ho, ptrdiff_t Wo, W4T *Y, ptrdiff_t ys,
                                               ptrdiff_t th, ptrdiff_t tw)
{
    W4T e[16], s[24];
    ptrdiff_t tile = 0;
    for (ptrdiff_t ti = 0; ti < th; ti++) {
        ptrdiff_t i0 = 4 * ti;
        for (ptrdiff_t tj = 0; tj < tw; tj++, tile++) {
            ptrdiff_t j0 = 4 * tj;
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    e[4 * a + b] = (i0 + a < Ho && j0 + b < Wo) ? dout[(i0 + a) * Wo + j0 + b] : 0;
            for (int b = 0; b < 4; b++)  /* s (6x4) = A e */
                W4_NAME(funk_w4_a)(e + b, 4, s + b, 4);
            for (int a = 0; a < 6; a++)  /* Y = s A^T */
                W4_NAME(funk_w4_a)(s + 4 * a, 1, Y + (6 * a) * ys + tile, ys);
        }
    }
}

/* u[xi * us + c] = (G g G^T)[xi / 6, xi % 6] for the Cg 3x3 filters g at w (one filter row) */
static inline void W4_NAME(funk_w4_filter_row)(const W4T *w, ptrdiff_t Cg, W4T *u, ptrdiff_t us)
{
    W4T s[18];
    for (ptrdiff_t c = 0; c < Cg; c++, w += 9) {
        for (int b = 0; b < 3; b++)  /* s (6x3) = G g */
            W4_NAME(funk_w4_g)(w + b, 3, s + b, 3);
        for (int a = 0; a < 6; a++)  /* u = s G^T */
            W4_NAME(funk_w4_g)(s + 3 * a, 1, u + (6 * a) * us + c, us);
    }
}

/* dw (Cg 3x3 filters at g) = G^T Z G for the Cg 6x6 matrices Z[xi] = z[xi * zs + c] */
static inline void W4_NAME(funk_w4_filter_grad_row)(const W4T *z, ptrdiff_t zs, ptrdiff_t Cg, W4T *g)
{
    W4T s[18];
    for (ptrdiff_t c = 0; c < Cg; c++, g += 9) {
        for (int b = 0; b < 6; b++)  /* s (3x6) = G^T Z */
            W4_NAME(funk_w4_gt)(z + b * zs + c, 6 * zs, s + b, 6);
        for (int a = 0; a < 3; a++)  /* g = s G */
            W4_NAME(funk_w4_gt)(s + 6 * a, 1, g + 3 * a, 1);
    }
}

#undef W4_NAME
#undef W4_CAT
#undef W4_CAT2
