/* The PC / PC-ALM inference loop of pcalm.core.loop.Workspace.loop_eager, fused, for a CPU.

   One call runs all T·k primal steps (and the credit steps) of one training step on the
   Workspace's own buffers, in place, single-threaded: for narrow nets the eager loop spends
   most of its time dispatching a dozen small tensor operations per step; here a step is
   three passes over the state, its matmuls on the vector unit. Same formulas and layer order as loop_eager (SPEC §3, §4);
   per-element arithmetic is plain IEEE (built with -ffp-contract=off, no fast-math), so a
   result depends on neither the machine nor its vector width. Sums over i run in i order.

   Layouts (contiguous; S = L-1 state layers, M models, B batch, N width, C outputs):
     z, P, D, Q, lam [S, M, B, N];  E [S+1, M, B, N] (E[S] = 0);  F0 [M, B, N] (= F[0]);
     W [S-1, M, N, N] = a_h W_l;  WT [S-1, M, N, N] = W_lᵀ;  Wo_neg [M, C, N] = −a_out W_L;
     WoT [M, N, C] = W_Lᵀ;  e, y [M, B, C];  eta, rho, alpha [M] (alpha unused for PC).
   act: 0 identity (P, D unused: φ(z) = z), 1 ReLU.  has_lam: 0 for PC (lam unused).
   Not tanh: a scalar tanh per element (libm's, not vectorised without -ffast-math) makes
   the loop slower than the eager one's vectorised tanh, so tanh nets run eagerly. */

#include <stddef.h>

/* out[b, :] = Σ_i a[b, i] w[i, :] for b < B: [B, K] × [K, N], each sum in i order.

   The narrow nets' matmuls are this function, so it is written for the vector unit with the
   compiler's vector types (GCC and Clang): a row of the output is NV vectors of LANES numbers
   held in registers, one multiply and one add per vector and i. N a multiple of LANES takes
   that path (NV a constant for the common widths); any other N the plain loop. Lanes are
   independent, so both give the same numbers. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef double v4d __attribute__((vector_size(32), aligned(8)));

#define DEFINE_ROWS_VECTOR(T, V, LANES, NAME)                                                  \
static inline __attribute__((always_inline)) void NAME(                                        \
    const T *restrict a, const T *restrict w, T *restrict out, int B, int K, int NV)           \
{                                                                                              \
    for (int b = 0; b < B; b++) {                                                              \
        V acc[16];                                                                             \
        for (int v = 0; v < NV; v++) acc[v] = (V){0};                                          \
        const T *restrict ab = a + (size_t)b * K;                                              \
        for (int i = 0; i < K; i++) {                                                          \
            const T ai = ab[i];                                                                \
            const T *restrict wi = w + (size_t)i * NV * LANES;                                 \
            for (int v = 0; v < NV; v++) acc[v] += ai * *(const V *)(wi + v * LANES);          \
        }                                                                                      \
        T *restrict o = out + (size_t)b * NV * LANES;                                          \
        for (int v = 0; v < NV; v++) *(V *)(o + v * LANES) = acc[v];                           \
    }                                                                                          \
}

#define DEFINE_ROWS_TIMES(T, V, LANES, NAME)                                                   \
DEFINE_ROWS_VECTOR(T, V, LANES, NAME##_vector)                                                 \
static void NAME(const T *restrict a, const T *restrict w, T *restrict out, int B, int K,     \
                 int N)                                                                        \
{                                                                                              \
    if (N % LANES == 0 && N / LANES <= 16) {                                                   \
        switch (N / LANES) { /* a constant NV: the accumulators stay in registers */          \
        case 1: NAME##_vector(a, w, out, B, K, 1); return;                                     \
        case 2: NAME##_vector(a, w, out, B, K, 2); return;                                     \
        case 4: NAME##_vector(a, w, out, B, K, 4); return;                                     \
        case 8: NAME##_vector(a, w, out, B, K, 8); return;                                     \
        default: NAME##_vector(a, w, out, B, K, N / LANES); return;                            \
        }                                                                                      \
    }                                                                                          \
    for (int b = 0; b < B; b++) {                                                              \
        T *restrict o = out + (size_t)b * N;                                                   \
        const T *restrict ab = a + (size_t)b * K;                                              \
        for (int j = 0; j < N; j++) o[j] = 0;                                                  \
        for (int i = 0; i < K; i++) {                                                          \
            const T ai = ab[i];                                                                \
            const T *restrict wi = w + (size_t)i * N;                                          \
            for (int j = 0; j < N; j++) o[j] += ai * wi[j];                                    \
        }                                                                                      \
    }                                                                                          \
}

/* z ← z + η (φ'(z) ⊙ Q + ε_next − ε); then P = φ(z), D = φ'(z) (ReLU: φ'(0) = 0, and a NaN
   stays NaN in P as torch.clamp_min keeps it; the identity: z alone). */
#define DEFINE_PRIMAL(T, NAME)                                                           \
static inline void NAME(size_t n, int act, T h, T *restrict z, T *restrict P, T *restrict D,  \
                        const T *restrict q, const T *restrict en, const T *restrict ec)       \
{                                                                                              \
    if (act == 1) {                                                                            \
        for (size_t k = 0; k < n; k++) {                                                       \
            const T v = z[k] + h * (D[k] * q[k] + en[k] - ec[k]);                              \
            z[k] = v;                                                                          \
            P[k] = (v > 0 || v != v) ? v : 0;                                                  \
            D[k] = v > 0;                                                                      \
        }                                                                                      \
    } else {                                                                                   \
        for (size_t k = 0; k < n; k++) z[k] = z[k] + h * (q[k] + en[k] - ec[k]);               \
    }                                                                                          \
}

/* r = z − (z_below + a_h f) (f_0: r = z − F0 with f = F0, z_below = 0 folded by the caller);
   then the credit in place: λ ← λ + α r (if dual), ε ← ρ r + λ (PC: ε ← ρ r). */
#define DEFINE_CREDIT(T, NAME)                                                                 \
static inline void NAME(size_t n, int has_lam, int dual, T rho, T alpha, T a_h,               \
                        const T *restrict z, const T *restrict zb, const T *restrict f,        \
                        T *restrict r, T *restrict lam)                                        \
{                                                                                              \
    for (size_t k = 0; k < n; k++) {                                                           \
        const T rk = zb ? z[k] - (zb[k] + a_h * f[k]) : z[k] - f[k];                           \
        if (has_lam) {                                                                         \
            if (dual) lam[k] += alpha * rk;                                                    \
            r[k] = lam[k] + rho * rk;                                                          \
        } else {                                                                               \
            r[k] = rho == 1 ? rk : rk * rho;                                                   \
        }                                                                                      \
    }                                                                                          \
}

/* The readout of every model: e = a_out φ(z_{S-1}) W_Lᵀ − y (Ptop: φ(z_{S-1}) [M, B, N]). */
#define DEFINE_READOUT(T, NAME, ROWS)                                                          \
static void NAME(const T *Ptop, const T *WoT, T *e, const T *y, int M, int B, int N, int C,    \
                 T a_out)                                                                      \
{                                                                                              \
    for (int m = 0; m < M; m++) {                                                              \
        T *ee = e + (size_t)m * B * C;                                                         \
        const T *yy = y + (size_t)m * B * C;                                                   \
        ROWS(Ptop + (size_t)m * B * N, WoT + (size_t)m * N * C, ee, B, N, C);                  \
        for (size_t k = 0; k < (size_t)B * C; k++) ee[k] = a_out * ee[k] - yy[k];             \
    }                                                                                          \
}

#define DEFINE_LOOP(T, NAME, ROWS, PRIMAL, CREDIT, READOUT)                                             \
void NAME(int S, int M, int B, int N, int C, int act, int has_lam,                           \
          T *z, T *P, T *D, T *E, T *lam, const T *F0, const T *W, const T *WT,               \
          const T *Wo_neg, const T *WoT, T *e, const T *y, T *Q,                              \
          const T *eta, const T *rho, const T *alpha, T a_h, T a_out,                         \
          int budget, int inner, int post_dual)                                               \
{                                                                                              \
    const size_t layer = (size_t)M * B * N, block = (size_t)B * N, nn = (size_t)N * N;         \
    const T *Pv = act ? P : z; /* φ(z) */                                                      \
    for (int t = 0; t < budget; t++) {                                                         \
        for (int it = 0; it < inner; it++) {                                                   \
            const int dual = has_lam && it == inner - 1 && (t < budget - 1 || post_dual);     \
            /* Q_l = a_h ε_{l+1} W_{l+1} (l < S-1), Q_{S-1} = −a_out e W_L: the old ε, e */   \
            for (int l = 0; l < S; l++)                                                        \
                for (int m = 0; m < M; m++) {                                                  \
                    T *q = Q + l * layer + m * block;                                          \
                    if (l < S - 1)                                                             \
                        ROWS(E + (l + 1) * layer + m * block, W + ((size_t)l * M + m) * nn,    \
                             q, B, N, N);                                                      \
                    else                                                                       \
                        ROWS(e + (size_t)m * B * C, Wo_neg + (size_t)m * C * N, q, B, C, N);   \
                }                                                                              \
            for (int l = 0; l < S; l++)                                                        \
                for (int m = 0; m < M; m++) {                                                  \
                    const size_t o = l * layer + m * block;                                    \
                    PRIMAL(block, act, eta[m], z + o, P + o, D + o, Q + o, E + o + layer,      \
                           E + o);                                                             \
                }                                                                              \
            /* r_l = z_l − f_l(z_{l-1}), f_l = z_{l-1} + a_h φ(z_{l-1}) W_lᵀ, f_1 = F0; the    \
               credit into E; Q_l (spent) holds φ(z_{l-1}) W_lᵀ */                             \
            for (int l = 0; l < S; l++)                                                        \
                for (int m = 0; m < M; m++) {                                                  \
                    const size_t o = l * layer + m * block;                                    \
                    T *lm = has_lam ? lam + o : NULL;                                          \
                    if (l == 0) {                                                              \
                        CREDIT(block, has_lam, dual, rho[m], alpha[m], a_h, z + o, NULL,       \
                               F0 + m * block, E + o, lm);                                     \
                    } else {                                                                   \
                        ROWS(Pv + o - layer, WT + ((size_t)(l - 1) * M + m) * nn, Q + o,       \
                             B, N, N);                                                         \
                        CREDIT(block, has_lam, dual, rho[m], alpha[m], a_h, z + o,             \
                               z + o - layer, Q + o, E + o, lm);                               \
                    }                                                                          \
                }                                                                              \
            READOUT(Pv + (S - 1) * layer, WoT, e, y, M, B, N, C, a_out);                       \
        }                                                                                      \
    }                                                                                          \
}

/* The forward pass of Workspace.forward (PC, PC-ALM), from F0 = a_in x W_1ᵀ:
     z_1 = F0;  z_{l+1} = z_l + a_h φ(z_l) W_{l+1}ᵀ;  P = φ(z), D = φ'(z);  e = a_out φ(z_{S-1}) W_Lᵀ − y;
   and ε = 0, λ = 0: the residuals r_l = z_l − f_l(z_{l-1}) are exactly zero at the forward
   pass, f_l being computed below by the very expression the loop's residual uses. */
#define DEFINE_FORWARD(T, NAME, ROWS, READOUT)                                                    \
void NAME(int S, int M, int B, int N, int C, int act, int has_lam,                           \
          T *z, T *P, T *D, T *E, T *lam, const T *F0, const T *WT, const T *WoT, T *e,        \
          const T *y, T *Q, T a_h, T a_out)                                                    \
{                                                                                              \
    const size_t layer = (size_t)M * B * N, block = (size_t)B * N, nn = (size_t)N * N;         \
    for (size_t k = 0; k < layer; k++) z[k] = F0[k];                                           \
    for (int l = 0; l < S; l++) {                                                              \
        T *zl = z + l * layer, *pl = act ? P + l * layer : zl, *dl = D + l * layer;            \
        for (size_t k = 0; k < layer; k++) {                                                   \
            const T v = zl[k];                                                                 \
            if (act == 1) { pl[k] = (v > 0 || v != v) ? v : 0; dl[k] = v > 0; }               \
        }                                                                                      \
        if (l == S - 1) break;                                                                 \
        for (int m = 0; m < M; m++) {                                                          \
            const size_t o = l * layer + m * block;                                            \
            T *f = Q + o, *zn = z + o + layer;                                                 \
            ROWS(pl + m * block, WT + ((size_t)l * M + m) * nn, f, B, N, N);                   \
            for (size_t k = 0; k < block; k++) zn[k] = zl[m * block + k] + a_h * f[k];        \
        }                                                                                      \
    }                                                                                          \
    const T *Pv = act ? P : z;                                                                 \
    READOUT(Pv + (S - 1) * layer, WoT, e, y, M, B, N, C, a_out);                               \
    for (size_t k = 0; k < (size_t)(S + 1) * layer; k++) E[k] = 0;                             \
    if (has_lam)                                                                               \
        for (size_t k = 0; k < (size_t)S * layer; k++) lam[k] = 0;                             \
}

DEFINE_ROWS_TIMES(float, v8f, 8, rows_times_f32)
DEFINE_ROWS_TIMES(double, v4d, 4, rows_times_f64)
DEFINE_PRIMAL(float, primal_f32)
DEFINE_PRIMAL(double, primal_f64)
DEFINE_CREDIT(float, credit_f32)
DEFINE_CREDIT(double, credit_f64)
DEFINE_READOUT(float, readout_f32, rows_times_f32)
DEFINE_READOUT(double, readout_f64, rows_times_f64)
DEFINE_LOOP(float, pcalm_loop_f32, rows_times_f32, primal_f32, credit_f32, readout_f32)
DEFINE_LOOP(double, pcalm_loop_f64, rows_times_f64, primal_f64, credit_f64, readout_f64)
DEFINE_FORWARD(float, pcalm_forward_f32, rows_times_f32, readout_f32)
DEFINE_FORWARD(double, pcalm_forward_f64, rows_times_f64, readout_f64)
