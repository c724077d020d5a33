// INTER_AREA resize with OpenCV's arithmetic (uint8 and float32).
//
// cv::resize(..., INTER_AREA) picks one of three algorithms from scale = src_size / dst_size (per axis, computed as
// 1 / (dst / src) in double):
//   1. both scales >= 1 and both (numerically) integers  -> block average ("fast area");
//   2. both scales >= 1 otherwise                         -> exact pixel-area weights ("general area");
//   3. any scale < 1 (enlarging)                          -> a bilinear variant with area-style coefficients.
// Equal sizes are a plain copy. The rounding rules of each path (documented in the functions below) were established
// by comparing against cv2 5.0 bit for bit; tests/test_kernels.py keeps checking them.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.hpp"
#include "parallel.hpp"
#include "rowsource.hpp"
#include "simd.hpp"

namespace medsam {

namespace {

using detail::RowSource;

// Round half to even for |v| < 2^22 without a libm call: adding 1.5 * 2^23 moves v to a binade whose spacing is 1, so
// IEEE round-to-nearest-even does the rounding (requires strict IEEE evaluation: no -ffast-math).
inline float rint_small(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

// saturate_cast<uchar>(float): round half to even, then clamp to [0, 255].
inline uint8_t sat_u8(float v) {
    v = v > -16.0f ? v : -16.0f;  // (NaN-safe clamp; the values here are within [0, 256) anyway)
    v = v < 4096.0f ? v : 4096.0f;
    const int i = static_cast<int>(rint_small(v));
    return static_cast<uint8_t>(std::min(std::max(i, 0), 255));
}

inline int round_even_to_int(double v) { return static_cast<int>(std::nearbyint(v)); }

inline int floor_to_int(double v) { return static_cast<int>(std::floor(v)); }

template <typename T>
inline T store_from_float(float v);
template <>
inline uint8_t store_from_float<uint8_t>(float v) {
    return sat_u8(v);
}
template <>
inline float store_from_float<float>(float v) {
    return v;
}

// ------------------------------------------------------------------------------------------------ general area
// Weight table of one axis: every destination cell [d * scale, (d + 1) * scale) lists the source pixels it overlaps,
// in increasing order, with weight overlap / cell width (cell width clipped at the image end); partial overlaps of at
// most 1e-3 are dropped. Weights are computed in double and stored as float.
struct AreaEntry {
    int d, s;
    float w;
};

std::vector<AreaEntry> area_table(int ssize, int dsize, double scale) {
    std::vector<AreaEntry> tab;
    tab.reserve(static_cast<size_t>(ssize) * 2 + 2);
    for (int d = 0; d < dsize; ++d) {
        const double f1 = d * scale;
        const double f2 = f1 + scale;
        const double cell = std::min(scale, ssize - f1);
        int s1 = static_cast<int>(std::ceil(f1));
        int s2 = floor_to_int(f2);
        s2 = std::min(s2, ssize - 1);
        s1 = std::min(s1, s2);
        if (s1 - f1 > 1e-3) tab.push_back({d, s1 - 1, static_cast<float>((s1 - f1) / cell)});
        for (int s = s1; s < s2; ++s) tab.push_back({d, s, static_cast<float>(1.0 / cell)});
        if (f2 - s2 > 1e-3) tab.push_back({d, s2, static_cast<float>(std::min(std::min(f2 - s2, 1.0), cell) / cell)});
    }
    return tab;
}

// acc[e] = ((0 + src[idx0[e]] * w0[e]) + src[idx1[e]] * w1[e]) + ... over `levels` levels of n elements each.
MEDSAM_CLONES void area_levels(const float* __restrict src, const int32_t* __restrict idx, const float* __restrict wt,
                               int n, int levels, float* __restrict acc) {
    for (int e = 0; e < n; ++e) acc[e] = 0.0f + src[idx[e]] * wt[e];
    for (int j = 1; j < levels; ++j) {
        const int32_t* __restrict ix = idx + static_cast<size_t>(j) * n;
        const float* __restrict w = wt + static_cast<size_t>(j) * n;
        for (int e = 0; e < n; ++e) acc[e] = acc[e] + src[ix[e]] * w[e];
    }
}

MEDSAM_CLONES void accumulate_scaled(float* __restrict sum, const float* __restrict h, float beta, int n) {
    for (int e = 0; e < n; ++e) sum[e] = sum[e] + beta * h[e];
}

MEDSAM_CLONES void u8_to_float(const uint8_t* __restrict s, float* __restrict d, int n) {
    for (int i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
}

// Horizontal pass of the general area path. For every output element e (= dx * cn + c) the accumulator is
// ((0 + S[s0]*w0) + S[s1]*w1) + ... in table order, in float32 - the order OpenCV uses. The loops run level by level
// (j-th table entry of every element) so that the independent per-element chains overlap in the pipeline.
struct AreaHPass {
    int n = 0;           // elements per output row (dw * cn)
    int full_levels = 0; // levels present for every element
    std::vector<int32_t> idx;  // [full_levels][n] source element index
    std::vector<float> wt;     // [full_levels][n]
    struct Extra {
        int32_t e, idx;
        float w;
    };
    std::vector<Extra> extra;  // remaining levels, ordered by level then element

    AreaHPass(int sw, int dw, int cn, double scale) {
        const std::vector<AreaEntry> tab = area_table(sw, dw, scale);
        std::vector<int> first(static_cast<size_t>(dw) + 1, 0), count(static_cast<size_t>(dw), 0);
        for (size_t k = 0; k < tab.size(); ++k) {
            if (count[static_cast<size_t>(tab[k].d)]++ == 0) first[static_cast<size_t>(tab[k].d)] = static_cast<int>(k);
        }
        int lo = std::numeric_limits<int>::max(), hi = 0;
        for (int d = 0; d < dw; ++d) {
            lo = std::min(lo, count[static_cast<size_t>(d)]);
            hi = std::max(hi, count[static_cast<size_t>(d)]);
        }
        n = dw * cn;
        full_levels = lo;
        idx.resize(static_cast<size_t>(lo) * static_cast<size_t>(n));
        wt.resize(idx.size());
        for (int j = 0; j < hi; ++j) {
            for (int d = 0; d < dw; ++d) {
                if (j >= count[static_cast<size_t>(d)]) continue;
                const AreaEntry& en = tab[static_cast<size_t>(first[static_cast<size_t>(d)] + j)];
                for (int c = 0; c < cn; ++c) {
                    const int e = d * cn + c;
                    if (j < lo) {
                        idx[static_cast<size_t>(j) * n + e] = en.s * cn + c;
                        wt[static_cast<size_t>(j) * n + e] = en.w;
                    } else {
                        extra.push_back({e, en.s * cn + c, en.w});
                    }
                }
            }
        }
    }

    // src: one source row as float32 (uint8 rows are converted first, so the gathers below load floats)
    void run(const float* src, float* acc) const {
        if (full_levels > 0)
            area_levels(src, idx.data(), wt.data(), n, full_levels, acc);
        else
            std::fill(acc, acc + n, 0.0f);  // (not reached: every cell overlaps at least one pixel)
        for (const Extra& x : extra) acc[x.e] = acc[x.e] + src[x.idx] * x.w;
    }
};

// General area: horizontal pass per source row (a row shared by two output rows is computed once), then for each
// output row sum = (0 + b0*h0) + b1*h1 + ... over its source rows, in float32, then cast (uint8: round half even).
struct AreaGeneral {
    AreaHPass hp;
    std::vector<AreaEntry> ytab;
    std::vector<size_t> first;  // first ytab entry of each output row (+ end)
    int n, sw, cn;

    AreaGeneral(int sh, int sw_, int cn_, int dh, int dw, double scale_x, double scale_y)
        : hp(sw_, dw, cn_, scale_x), ytab(area_table(sh, dh, scale_y)), n(dw * cn_), sw(sw_), cn(cn_) {
        first.assign(static_cast<size_t>(dh) + 1, ytab.size());
        for (size_t k = ytab.size(); k-- > 0;) first[static_cast<size_t>(ytab[k].d)] = k;
    }

    template <typename T>
    void rows(RowSource<T>& src, int y0, int y1, T* dst) const {
        const int n = this->n, sw = this->sw, cn = this->cn;  // locals: byte stores may alias members
        std::vector<float> hbuf(static_cast<size_t>(n)), sum(static_cast<size_t>(n));
        std::vector<float> frow(std::is_same<T, float>::value ? 0 : static_cast<size_t>(sw * cn));
        src.reserve_slots(1);
        int cached_row = -1;
        for (int dy = y0; dy < y1; ++dy) {
            std::fill(sum.begin(), sum.end(), 0.0f);
            for (size_t k = first[static_cast<size_t>(dy)]; k < ytab.size() && ytab[k].d == dy; ++k) {
                const int sy = ytab[k].s;
                if (sy != cached_row) {
                    if constexpr (std::is_same<T, float>::value) {
                        hp.run(src.row(sy, 0), hbuf.data());
                    } else {
                        u8_to_float(src.row(sy, 0), frow.data(), sw * cn);
                        hp.run(frow.data(), hbuf.data());
                    }
                    cached_row = sy;
                }
                accumulate_scaled(sum.data(), hbuf.data(), ytab[k].w, n);
            }
            T* out = dst + static_cast<size_t>(dy) * n;
            for (int e = 0; e < n; ++e) out[e] = store_from_float<T>(sum[static_cast<size_t>(e)]);
        }
    }
};

// ------------------------------------------------------------------------------------------------ fast area
// Integer factors kx, ky (source = factor * destination exactly).
// uint8: integer block sum; 2x2 blocks with 1, 3 or 4 channels give (sum + 2) >> 2, every other case
//        round_half_even(float(sum) * (1.f / (kx * ky))). Sums are exact, so rows are added first, then columns.
//        Sums of blocks taller than 257 rows are kept in 64 bits (cv2 5.0's int sum wraps past 2^31, e.g. a
//        8192 x 8192 image of 255 resized to 2 x 2 gives 0 there; here it gives 255).
struct AreaFastU8 {
    int cn, dw, kx, ky;

    template <typename A>
    static void block_rows(RowSource<uint8_t>& src, int64_t sy, int ky, int sn, A* __restrict cs) {
        {
            const uint8_t* __restrict r = src.row(sy, 0);
            for (int i = 0; i < sn; ++i) cs[i] = r[i];
        }
        for (int i = 1; i < ky; ++i) {
            const uint8_t* __restrict r = src.row(sy + i, 0);
            for (int k = 0; k < sn; ++k) cs[k] = static_cast<A>(cs[k] + r[k]);
        }
    }

    void rows(RowSource<uint8_t>& src, int y0, int y1, uint8_t* dst) const {
        const int cn = this->cn, dw = this->dw, kx = this->kx, ky = this->ky;  // locals: stores may alias
        const int n = dw * cn, sn = n * kx;
        src.reserve_slots(2);
        const bool half_up = kx == 2 && ky == 2 && (cn == 1 || cn == 3 || cn == 4);
        const float scale = 1.0f / static_cast<float>(static_cast<int64_t>(kx) * ky);
        // column sums of the block rows: uint16 holds up to 257 rows of 255
        std::vector<uint16_t> colsum16(static_cast<size_t>(sn));
        std::vector<int64_t> colsum64(ky > 257 ? static_cast<size_t>(sn) : 0);
        for (int dy = y0; dy < y1; ++dy) {
            uint8_t* out = dst + static_cast<size_t>(dy) * n;
            const int64_t sy = static_cast<int64_t>(dy) * ky;
            if (kx == 2 && ky == 2 && cn == 1) {
                const uint8_t* __restrict r0 = src.row(sy, 0);
                const uint8_t* __restrict r1 = src.row(sy + 1, 1);
                for (int x = 0; x < dw; ++x) {
                    const int s = r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1];
                    out[x] = static_cast<uint8_t>((s + 2) >> 2);
                }
                continue;
            }
            if (ky <= 257)
                block_rows(src, sy, ky, sn, colsum16.data());
            else
                block_rows(src, sy, ky, sn, colsum64.data());
            for (int x = 0; x < dw; ++x) {
                for (int c = 0; c < cn; ++c) {
                    int64_t sum = 0;
                    const int base = x * kx * cn + c;
                    if (ky <= 257)
                        for (int j = 0; j < kx; ++j) sum += colsum16[static_cast<size_t>(base + j * cn)];
                    else
                        for (int j = 0; j < kx; ++j) sum += colsum64[static_cast<size_t>(base + j * cn)];
                    out[x * cn + c] = half_up ? static_cast<uint8_t>((sum + 2) >> 2) : sat_u8(static_cast<float>(sum) * scale);
                }
            }
        }
    }
};

// float32: the block's elements are visited row by row; sum += ((e0 + e1) + e2) + e3 per group of four, then one by
// one, and the result is sum * (1.f / (kx * ky)). For 2x2 blocks with 1 or 4 channels the first
// floor(dw * cn / 4) * 4 elements of each row use ((a + b) + (c + d)) * 0.25f instead (a, b: top pair).
// Blocks of more than kMaxTable elements (only from huge sources, e.g. broadcast views) are summed row by row in the
// same order, keeping one block row at a time instead of ky rows and kx * ky index tables.
struct AreaFastF32 {
    int cn, dw, kx, ky;
    static constexpr int64_t kMaxTable = int64_t(1) << 16;

    void rows_streaming(RowSource<float>& src, int y0, int y1, float* dst) const {
        const int cn = this->cn, dw = this->dw, kx = this->kx, ky = this->ky;
        const int n = dw * cn;
        const int64_t area = static_cast<int64_t>(kx) * ky;
        const int64_t grouped = (area / 4) * 4;  // elements summed in groups of four; the rest one by one
        const float scale = 1.0f / static_cast<float>(area);
        src.reserve_slots(1);
        std::vector<float> sum(static_cast<size_t>(n)), group(static_cast<size_t>(n));
        for (int dy = y0; dy < y1; ++dy) {
            std::fill(sum.begin(), sum.end(), 0.0f);
            int64_t k = 0;
            for (int i = 0; i < ky; ++i) {
                const float* r = src.row(static_cast<int64_t>(dy) * ky + i, 0);
                for (int j = 0; j < kx; ++j, ++k) {
                    const int q = static_cast<int>(k & 3);
                    for (int e = 0; e < n; ++e) {
                        const int x = e / cn, c = e - x * cn;
                        const float v = r[static_cast<size_t>(x) * kx * cn + static_cast<size_t>(j) * cn + c];
                        if (k >= grouped)
                            sum[static_cast<size_t>(e)] = sum[static_cast<size_t>(e)] + v;
                        else if (q == 0)
                            group[static_cast<size_t>(e)] = v;
                        else if (q < 3)
                            group[static_cast<size_t>(e)] = group[static_cast<size_t>(e)] + v;
                        else
                            sum[static_cast<size_t>(e)] = sum[static_cast<size_t>(e)] + (group[static_cast<size_t>(e)] + v);
                    }
                }
            }
            float* out = dst + static_cast<size_t>(dy) * n;
            for (int e = 0; e < n; ++e) out[e] = sum[static_cast<size_t>(e)] * scale;
        }
    }

    void rows(RowSource<float>& src, int y0, int y1, float* dst) const {
        if (static_cast<int64_t>(kx) * ky > kMaxTable) return rows_streaming(src, y0, y1, dst);
        const int cn = this->cn, dw = this->dw, kx = this->kx, ky = this->ky;
        const int n = dw * cn;
        const int area = kx * ky;
        src.reserve_slots(ky);
        std::vector<const float*> rp(static_cast<size_t>(ky));
        std::vector<int> krow(static_cast<size_t>(area)), koff(static_cast<size_t>(area));
        for (int k = 0; k < area; ++k) {
            krow[static_cast<size_t>(k)] = k / kx;
            koff[static_cast<size_t>(k)] = (k % kx) * cn;
        }
        const float scale = 1.0f / static_cast<float>(area);
        const int npair = (kx == 2 && ky == 2 && (cn == 1 || cn == 4)) ? (n / 4) * 4 : 0;
        for (int dy = y0; dy < y1; ++dy) {
            for (int i = 0; i < ky; ++i) rp[static_cast<size_t>(i)] = src.row(static_cast<int64_t>(dy) * ky + i, i);
            float* out = dst + static_cast<size_t>(dy) * n;
            int e = 0;
            if (npair > 0) {
                const float* __restrict r0 = rp[0];
                const float* __restrict r1 = rp[1];
                if (cn == 1) {
                    for (; e < npair; ++e)
                        out[e] = ((r0[2 * e] + r0[2 * e + 1]) + (r1[2 * e] + r1[2 * e + 1])) * 0.25f;
                } else {
                    for (; e < npair; ++e) {
                        const int x = e / cn, c = e - x * cn;
                        const int b = 2 * x * cn + c;
                        out[e] = ((r0[b] + r0[b + cn]) + (r1[b] + r1[b + cn])) * 0.25f;
                    }
                }
            }
            for (; e < n; ++e) {
                const int x = e / cn, c = e - x * cn;
                const int base = x * kx * cn + c;
                float s = 0.0f;
                int k = 0;
                for (; k <= area - 4; k += 4) {
                    const float v0 = rp[static_cast<size_t>(krow[k])][base + koff[k]];
                    const float v1 = rp[static_cast<size_t>(krow[k + 1])][base + koff[k + 1]];
                    const float v2 = rp[static_cast<size_t>(krow[k + 2])][base + koff[k + 2]];
                    const float v3 = rp[static_cast<size_t>(krow[k + 3])][base + koff[k + 3]];
                    s = s + (((v0 + v1) + v2) + v3);
                }
                for (; k < area; ++k) s = s + rp[static_cast<size_t>(krow[k])][base + koff[k]];
                out[e] = s * scale;
            }
        }
    }
};

// ------------------------------------------------------------------------------------------------ enlarging
// Bilinear variant used by INTER_AREA when a scale is < 1. Per axis, with inv = dst / src and scale = 1 / inv:
//   s = floor(d * scale); f = float((d + 1) - (s + 1) * inv); f = f <= 0 ? 0 : f - floor(f);
// the last source pixel is used alone (f = 0) once s + 1 reaches the end. Weights are (1 - f, f).
// uint8: weights are round_half_even(w * 2048) as int16; the horizontal pass is exact in int32
//        (a pixel alone counts S * 2048); the vertical pass is
//        ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), then (+ 2) >> 2, clamped to [0, 255].
// float32: h = S0 * a0 + S1 * a1 (S * 1 alone); v = h0 * b0 + h1 * b1.
struct AxisCoef {
    std::vector<int> s;   // first source index
    std::vector<float> f; // weight of the second source pixel
    int first_alone;      // first destination index whose source pixel is used alone (horizontal axis)
};

AxisCoef area_linear_axis(int ssize, int dsize) {
    AxisCoef ax;
    ax.s.resize(static_cast<size_t>(dsize));
    ax.f.resize(static_cast<size_t>(dsize));
    ax.first_alone = dsize;
    const double inv = static_cast<double>(dsize) / ssize;
    const double scale = 1.0 / inv;
    for (int d = 0; d < dsize; ++d) {
        int s = floor_to_int(d * scale);
        float f = static_cast<float>((d + 1) - (s + 1) * inv);
        f = f <= 0 ? 0.0f : f - static_cast<float>(floor_to_int(f));
        if (s + 1 >= ssize) {
            ax.first_alone = std::min(ax.first_alone, d);
            if (s >= ssize - 1) {
                f = 0.0f;
                s = ssize - 1;
            }
        }
        ax.s[static_cast<size_t>(d)] = s;
        ax.f[static_cast<size_t>(d)] = f;
    }
    return ax;
}

inline int16_t coef_fixed(float w) {
    const double v = std::nearbyint(static_cast<double>(w * 2048.0f));
    return static_cast<int16_t>(std::min(std::max(v, -32768.0), 32767.0));
}

// Two cached horizontal rows (source rows only move forward: replace an empty slot, else the smaller row).
template <typename W>
struct HCache {
    std::vector<W> row[2];
    int key[2] = {-1, -1};
    explicit HCache(int n) : row{std::vector<W>(static_cast<size_t>(n)), std::vector<W>(static_cast<size_t>(n))} {}
    template <typename Fill>
    const W* get(int sy, Fill&& fill) {
        for (int i = 0; i < 2; ++i)
            if (key[i] == sy) return row[i].data();
        const int v = key[0] == -1 ? 0 : (key[1] == -1 ? 1 : (key[0] < key[1] ? 0 : 1));
        fill(sy, row[v].data());
        key[v] = sy;
        return row[v].data();
    }
};

template <typename T>
struct AreaEnlarge {
    using W = typename std::conditional<std::is_same<T, uint8_t>::value, int32_t, float>::type;
    int sh, cn, n, nalone;
    std::vector<int32_t> xo;
    std::vector<W> xa0, xa1;
    AxisCoef ay;

    AreaEnlarge(int sh_, int sw, int cn_, int dh, int dw) : sh(sh_), cn(cn_), n(dw * cn_) {
        const AxisCoef ax = area_linear_axis(sw, dw);
        ay = area_linear_axis(sh, dh);
        xo.resize(static_cast<size_t>(n));
        xa0.resize(static_cast<size_t>(n));
        xa1.resize(static_cast<size_t>(n));
        for (int d = 0; d < dw; ++d) {
            const float f = ax.f[static_cast<size_t>(d)];
            for (int c = 0; c < cn; ++c) {
                const size_t e = static_cast<size_t>(d * cn + c);
                xo[e] = ax.s[static_cast<size_t>(d)] * cn + c;
                if constexpr (std::is_same<T, uint8_t>::value) {
                    xa0[e] = coef_fixed(1.0f - f);
                    xa1[e] = coef_fixed(f);
                } else {
                    xa0[e] = 1.0f - f;
                    xa1[e] = f;
                }
            }
        }
        nalone = ax.first_alone * cn;  // elements [nalone, n) use one source pixel
    }

    void rows(RowSource<T>& src, int y0, int y1, T* dst) const {
        const int n = this->n, nalone = this->nalone, cn = this->cn, sh = this->sh;  // locals: stores may alias
        HCache<W> cache(n);
        src.reserve_slots(1);
        auto fill = [&](int sy, W* h) {
            const T* __restrict S = src.row(sy, 0);
            for (int e = 0; e < nalone; ++e) h[e] = S[xo[e]] * xa0[e] + S[xo[e] + cn] * xa1[e];
            if constexpr (std::is_same<T, uint8_t>::value) {
                for (int e = nalone; e < n; ++e) h[e] = S[xo[e]] * 2048;
            } else {
                for (int e = nalone; e < n; ++e) h[e] = S[xo[e]] * 1.0f;
            }
        };
        for (int dy = y0; dy < y1; ++dy) {
            const int sy = ay.s[static_cast<size_t>(dy)];
            const int r0 = std::min(std::max(sy, 0), sh - 1);
            const int r1 = std::min(std::max(sy + 1, 0), sh - 1);
            const float fy = ay.f[static_cast<size_t>(dy)];
            const W* h0 = cache.get(r0, fill);
            const W* h1 = cache.get(r1, fill);
            T* __restrict out = dst + static_cast<size_t>(dy) * n;
            if constexpr (std::is_same<T, uint8_t>::value) {
                const int32_t b0 = coef_fixed(1.0f - fy), b1 = coef_fixed(fy);
                for (int e = 0; e < n; ++e) {
                    const int32_t p0 = std::min(h0[e] >> 4, 32767);
                    const int32_t p1 = std::min(h1[e] >> 4, 32767);
                    const int32_t v = (((p0 * b0) >> 16) + ((p1 * b1) >> 16) + 2) >> 2;
                    out[e] = static_cast<uint8_t>(std::min(std::max(v, 0), 255));
                }
            } else {
                const float b0 = 1.0f - fy, b1 = fy;
                for (int e = 0; e < n; ++e) out[e] = h0[e] * b0 + h1[e] * b1;
            }
        }
    }
};

// ------------------------------------------------------------------------------------------------ dispatch
template <typename T>
struct CopyRows {
    int n;
    void rows(RowSource<T>& src, int y0, int y1, T* dst) const {
        src.reserve_slots(1);
        for (int y = y0; y < y1; ++y) std::memcpy(dst + static_cast<size_t>(y) * n, src.row(y, 0), sizeof(T) * n);
    }
};

struct Plan {
    enum Kind { Copy, Fast, General, Enlarge } kind;
    int kx = 1, ky = 1;
    double scale_x = 1, scale_y = 1;
};

Plan plan_area(int sh, int sw, int dh, int dw) {
    Plan p;
    if (sh == dh && sw == dw) {
        p.kind = Plan::Copy;
        return p;
    }
    const double inv_x = static_cast<double>(dw) / sw, inv_y = static_cast<double>(dh) / sh;
    p.scale_x = 1.0 / inv_x;
    p.scale_y = 1.0 / inv_y;
    if (p.scale_x >= 1 && p.scale_y >= 1) {
        const int ix = round_even_to_int(p.scale_x), iy = round_even_to_int(p.scale_y);
        const bool fast = std::abs(p.scale_x - ix) < DBL_EPSILON && std::abs(p.scale_y - iy) < DBL_EPSILON;
        if (fast) {
            p.kind = Plan::Fast;
            p.kx = ix;
            p.ky = iy;
        } else {
            p.kind = Plan::General;
        }
    } else {
        p.kind = Plan::Enlarge;
    }
    return p;
}

// Runs an algorithm over output rows, in parallel for large images (each worker has its own row source).
template <typename T, typename Algo>
void run_rows(const StridedImage& im, const Algo& algo, int dh, T* dst) {
    const int64_t work = im.h * im.w * im.cn;
    detail::parallel_rows(dh, work, [&](int y0, int y1) {
        RowSource<T> src(im);
        algo.rows(src, y0, y1, dst);
    });
}

template <typename T>
void resize_area_any(const StridedImage& im, int dh, int dw, T* dst) {
    const int sh = static_cast<int>(im.h), sw = static_cast<int>(im.w), cn = static_cast<int>(im.cn);
    const Plan p = plan_area(sh, sw, dh, dw);
    switch (p.kind) {
        case Plan::Copy: return run_rows(im, CopyRows<T>{sw * cn}, dh, dst);
        case Plan::Fast:
            if constexpr (std::is_same<T, uint8_t>::value)
                return run_rows(im, AreaFastU8{cn, dw, p.kx, p.ky}, dh, dst);
            else
                return run_rows(im, AreaFastF32{cn, dw, p.kx, p.ky}, dh, dst);
        case Plan::General: return run_rows(im, AreaGeneral(sh, sw, cn, dh, dw, p.scale_x, p.scale_y), dh, dst);
        case Plan::Enlarge: return run_rows(im, AreaEnlarge<T>(sh, sw, cn, dh, dw), dh, dst);
    }
}

}  // namespace

void resize_area_u8(const StridedImage& im, int dh, int dw, uint8_t* dst) { resize_area_any<uint8_t>(im, dh, dw, dst); }

void resize_area_f32(const StridedImage& im, int dh, int dw, float* dst) { resize_area_any<float>(im, dh, dw, dst); }

}  // namespace medsam
