/* Mamba's CPU kernels (see mamba_cpu.py): the selective scan and the causal depthwise
 * convolution with its SiLU, each forward and backward.
 *
 * The selective scan. Shapes (all float32, contiguous, batch-major): x, dt, y, gy, gx, gdt (batch, time, inner);
 * b, c, gb, gc (batch, time, d_state); a (inner, d_state); h0, hT, ghT, gh0, ga
 * (batch, inner, d_state). h0, ghT and gh0 may be NULL (zero state / no gradient).
 *
 *     h_t = exp(dt_t a) * h_{t-1} + dt_t x_t b_t,    y_t = <h_t, c_t>
 *
 * One (row, channel) pair at a time: its d_state-long state and gradients stay in registers,
 * and the backward replays the forward of that pair into a small time x d_state buffer instead
 * of keeping batch x time x inner x d_state states between the passes. ga is written per row
 * (the caller sums it), so calls on disjoint row ranges may run in parallel. d_state = 16
 * (Mamba's default) is compiled as a constant, which lets the compiler keep it in registers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define INLINE static inline __attribute__((always_inline))

INLINE void forward(int64_t batch, int64_t time, int64_t inner, const int64_t d_state,
                    const float *restrict x, const float *restrict dt, const float *restrict a,
                    const float *restrict b, const float *restrict c, const float *restrict h0,
                    float *restrict y, float *restrict hT) {
    float h[d_state];
    for (int64_t i = 0; i < batch; i++) {
        for (int64_t d = 0; d < inner; d++) {
            const float *ad = a + d * d_state;
            for (int64_t n = 0; n < d_state; n++)
                h[n] = h0 ? h0[(i * inner + d) * d_state + n] : 0.0f;
            for (int64_t t = 0; t < time; t++) {
                int64_t k = (i * time + t) * inner + d;
                const float *bt = b + (i * time + t) * d_state;
                const float *ct = c + (i * time + t) * d_state;
                float delta = dt[k], u = delta * x[k], acc = 0.0f;
                for (int64_t n = 0; n < d_state; n++) {
                    h[n] = expf(delta * ad[n]) * h[n] + u * bt[n];
                    acc += h[n] * ct[n];
                }
                y[k] = acc;
            }
            for (int64_t n = 0; n < d_state; n++) hT[(i * inner + d) * d_state + n] = h[n];
        }
    }
}

INLINE int backward(int64_t batch, int64_t time, int64_t inner, const int64_t d_state,
                    const float *restrict x, const float *restrict dt, const float *restrict a,
                    const float *restrict b, const float *restrict c, const float *restrict h0,
                    const float *restrict gy, const float *restrict ghT, float *restrict gx,
                    float *restrict gdt, float *restrict ga, float *restrict gb,
                    float *restrict gc, float *restrict gh0) {
    float *work = malloc(sizeof(float) * (2 * time + 1) * d_state);
    if (!work) return -1;
    float *states = work;                         /* h_{-1} .. h_{time-1}: time + 1 rows */
    float *decays = work + (time + 1) * d_state;  /* exp(dt_t a): time rows */
    float g[d_state], gad[d_state];              /* dL/dh_t walked backwards; dL/da_d */
    for (int64_t i = 0; i < batch; i++) {
        for (int64_t d = 0; d < inner; d++) {
            int64_t row = (i * inner + d) * d_state;
            const float *ad = a + d * d_state;
            for (int64_t n = 0; n < d_state; n++) {
                states[n] = h0 ? h0[row + n] : 0.0f;
                g[n] = ghT ? ghT[row + n] : 0.0f;
                gad[n] = 0.0f;
            }
            for (int64_t t = 0; t < time; t++) {
                int64_t k = (i * time + t) * inner + d;
                const float *bt = b + (i * time + t) * d_state;
                const float *before = states + t * d_state;
                float *after = states + (t + 1) * d_state, *decay = decays + t * d_state;
                float delta = dt[k], u = delta * x[k];
                for (int64_t n = 0; n < d_state; n++) {
                    decay[n] = expf(delta * ad[n]);
                    after[n] = decay[n] * before[n] + u * bt[n];
                }
            }
            for (int64_t t = time - 1; t >= 0; t--) {
                int64_t k = (i * time + t) * inner + d;
                const float *bt = b + (i * time + t) * d_state;
                const float *ct = c + (i * time + t) * d_state;
                float *gbt = gb + (i * time + t) * d_state, *gct = gc + (i * time + t) * d_state;
                const float *before = states + t * d_state, *after = states + (t + 1) * d_state;
                const float *decay = decays + t * d_state;
                float delta = dt[k], xk = x[k], u = delta * xk, gyk = gy[k];
                float gu = 0.0f, gdelta = 0.0f;
                for (int64_t n = 0; n < d_state; n++) {
                    float gn = g[n] + gyk * ct[n];
                    gct[n] += gyk * after[n];
                    gbt[n] += u * gn;
                    gu += gn * bt[n];
                    float q = gn * decay[n] * before[n];
                    gdelta += q * ad[n];
                    gad[n] += q * delta;
                    g[n] = gn * decay[n];
                }
                gx[k] = gu * delta;
                gdt[k] = gdelta + gu * xk;
            }
            for (int64_t n = 0; n < d_state; n++) ga[row + n] += gad[n];
            if (gh0)
                for (int64_t n = 0; n < d_state; n++) gh0[row + n] = g[n];
        }
    }
    free(work);
    return 0;
}

void selective_scan_forward(int64_t batch, int64_t time, int64_t inner, int64_t d_state,
                            const float *x, const float *dt, const float *a, const float *b,
                            const float *c, const float *h0, float *y, float *hT) {
    if (d_state == 16)
        forward(batch, time, inner, 16, x, dt, a, b, c, h0, y, hT);
    else
        forward(batch, time, inner, d_state, x, dt, a, b, c, h0, y, hT);
}

/* Adds into gb, gc and ga (zero them first); writes gx, gdt and gh0. Returns 0, or -1 when
 * the (2 time + 1) x d_state work buffer cannot be allocated. */
int selective_scan_backward(int64_t batch, int64_t time, int64_t inner, int64_t d_state,
                            const float *x, const float *dt, const float *a, const float *b,
                            const float *c, const float *h0, const float *gy, const float *ghT,
                            float *gx, float *gdt, float *ga, float *gb, float *gc, float *gh0) {
    if (d_state == 16)
        return backward(batch, time, inner, 16, x, dt, a, b, c, h0, gy, ghT, gx, gdt, ga, gb,
                        gc, gh0);
    return backward(batch, time, inner, d_state, x, dt, a, b, c, h0, gy, ghT, gx, gdt, ga, gb,
                    gc, gh0);
}

/* The causal depthwise convolution and SiLU, from a zero history:
 *
 *     y[t, d] = SiLU(bias[d] + sum_k w[k, d] x[t - width + 1 + k, d]),   x[s < 0] = 0
 *
 * x (batch, time, inner) with `stride` floats between time steps (it may be a slice of the
 * in_proj output); w (width, inner); bias (inner); y (batch, time, inner) contiguous. The
 * inner loops run along channels, which are contiguous. */
INLINE void conv_pre_activation(int64_t t, int64_t inner, int64_t width, int64_t stride,
                                const float *restrict x, const float *restrict w,
                                const float *restrict bias, float *restrict pre) {
    for (int64_t d = 0; d < inner; d++) pre[d] = bias[d];
    for (int64_t k = 0; k < width; k++) {
        int64_t s = t - width + 1 + k;
        if (s < 0) continue;
        for (int64_t d = 0; d < inner; d++) pre[d] += w[k * inner + d] * x[s * stride + d];
    }
}

void causal_conv_forward(int64_t batch, int64_t time, int64_t inner, int64_t width,
                         int64_t stride, const float *x, const float *w, const float *bias,
                         float *y) {
    for (int64_t i = 0; i < batch; i++) {
        for (int64_t t = 0; t < time; t++) {
            float *yt = y + (i * time + t) * inner;
            conv_pre_activation(t, inner, width, stride, x + i * time * stride, w, bias, yt);
            for (int64_t d = 0; d < inner; d++) yt[d] = yt[d] / (1.0f + expf(-yt[d]));
        }
    }
}

/* Writes gx (batch, time, inner), contiguous; adds into gw (batch, width, inner) and gbias
 * (batch, inner), per row (the caller sums them). Returns 0, or -1 when the time x inner work
 * buffer cannot be allocated. */
int causal_conv_backward(int64_t batch, int64_t time, int64_t inner, int64_t width,
                         int64_t stride, const float *restrict x, const float *restrict w,
                         const float *restrict bias, const float *restrict gy,
                         float *restrict gx, float *restrict gw, float *restrict gbias) {
    float *gpre = malloc(sizeof(float) * time * inner);  /* dL/d(pre-activation) of one row */
    if (!gpre) return -1;
    for (int64_t i = 0; i < batch; i++) {
        const float *xi = x + i * time * stride;
        float *gwi = gw + i * width * inner, *gbi = gbias + i * inner;
        for (int64_t t = 0; t < time; t++) {
            const float *gyt = gy + (i * time + t) * inner;
            float *gt = gpre + t * inner;
            conv_pre_activation(t, inner, width, stride, xi, w, bias, gt);
            for (int64_t d = 0; d < inner; d++) {
                float sig = 1.0f / (1.0f + expf(-gt[d]));
                gt[d] = gyt[d] * sig * (1.0f + gt[d] * (1.0f - sig));
                gbi[d] += gt[d];
            }
            for (int64_t k = 0; k < width; k++) {
                int64_t s = t - width + 1 + k;
                if (s < 0) continue;
                for (int64_t d = 0; d < inner; d++)
                    gwi[k * inner + d] += gt[d] * xi[s * stride + d];
            }
        }
        for (int64_t s = 0; s < time; s++) {
            float *gxs = gx + (i * time + s) * inner;
            for (int64_t d = 0; d < inner; d++) gxs[d] = 0.0f;
            for (int64_t k = 0; k < width; k++) {
                int64_t t = s + width - 1 - k;
                if (t >= time) continue;
                for (int64_t d = 0; d < inner; d++)
                    gxs[d] += w[k * inner + d] * gpre[t * inner + d];
            }
        }
    }
    free(gpre);
    return 0;
}
