// Low-resolution logits -> full-resolution mask: bilinear upsampling fused with the threshold "logit > 0".
//
// The interpolated value reproduces cv::resize(..., INTER_LINEAR) on float32 as computed by OpenCV's own code (not
// the IPP build path, which differs by up to ~1e-5 relative):
//   x: f = float((d + 0.5) * scale - 0.5), s = floor(f), f -= s; s < 0 -> (s, f) = (0, 0); once s + 1 reaches the
//      last column, that column is used alone. h = S[s] * (1 - f) + S[s + 1] * f  (alone: S[s] * 1).
//   y: same f and s without clamping; rows s and s + 1 are clamped into the image. v = h0 * (1 - f) + h1 * f.
// scale = 1 / (dst / src) in double. Equal sizes are a copy and an exact 2x downscale is OpenCV's 2x2 area average;
// both are handled as such.
//
// Two strategies, same masks (barring float underflow of subnormal logits):
//  * dense (small factors): horizontal rows cached per source row, then a vectorisable vertical pass;
//  * sparse (large factors): only the sign is needed. Output pixels of one source cell (same two source rows, same
//    two source columns) whose four source values are all > 0 are 1, all <= 0 are 0, whatever the (non-negative)
//    weights, so they are filled as runs and only cells that straddle 0 are interpolated. Output rows that share
//    their source rows with the previous row copy it and recompute the straddling cells only.

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.hpp"
#include "parallel.hpp"
#include "simd.hpp"

namespace medsam {

namespace {

// memset for short runs without a call (overlapping 8-byte stores)
inline void fill_bytes(uint8_t* p, int len, uint8_t v) {
    if (len >= 32) {
        std::memset(p, v, static_cast<size_t>(len));
        return;
    }
    const uint64_t pat = 0x0101010101010101ULL * v;
    if (len >= 8) {
        for (int i = 0; i + 8 <= len; i += 8) std::memcpy(p + i, &pat, 8);
        std::memcpy(p + len - 8, &pat, 8);
    } else if (len >= 4) {
        std::memcpy(p, &pat, 4);
        std::memcpy(p + len - 4, &pat, 4);
    } else {
        for (int i = 0; i < len; ++i) p[i] = v;
    }
}

MEDSAM_CLONES void hpass_linear(const float* __restrict s, const int* __restrict x0, const int* __restrict x1,
                                const float* __restrict a0, const float* __restrict a1, int fa, int dw,
                                float* __restrict h) {
    for (int d = 0; d < fa; ++d) h[d] = s[x0[d]] * a0[d] + s[x1[d]] * a1[d];
    for (int d = fa; d < dw; ++d) h[d] = s[x0[d]] * 1.0f;
}

MEDSAM_CLONES void vpass_threshold(const float* __restrict h0, const float* __restrict h1, float b0, float b1,
                                   uint8_t* __restrict o, int dw) {
    for (int x = 0; x < dw; ++x) o[x] = static_cast<uint8_t>(h0[x] * b0 + h1[x] * b1 > 0.0f);
}

}  // namespace

MaskUpsampler::MaskUpsampler(int sh, int sw, int dh, int dw) : sh_(sh), sw_(sw), dh_(dh), dw_(dw) {
    if (sh == dh && sw == dw) {
        mode_ = Mode::Identity;
        return;
    }
    const double inv_x = static_cast<double>(dw) / sw, inv_y = static_cast<double>(dh) / sh;
    const double scale_x = 1.0 / inv_x, scale_y = 1.0 / inv_y;
    const int ix = static_cast<int>(std::nearbyint(scale_x)), iy = static_cast<int>(std::nearbyint(scale_y));
    if (ix == 2 && iy == 2 && std::abs(scale_x - 2) < DBL_EPSILON && std::abs(scale_y - 2) < DBL_EPSILON) {
        mode_ = Mode::Area2x;
        return;
    }

    x0_.resize(static_cast<size_t>(dw));
    x1_.resize(static_cast<size_t>(dw));
    a0_.resize(static_cast<size_t>(dw));
    a1_.resize(static_cast<size_t>(dw));
    first_alone_ = dw;
    for (int d = 0; d < dw; ++d) {
        float f = static_cast<float>((d + 0.5) * scale_x - 0.5);
        int s = static_cast<int>(std::floor(f));
        f -= static_cast<float>(s);
        if (s < 0) {
            f = 0.0f;
            s = 0;
        }
        if (s + 1 >= sw) {
            first_alone_ = std::min(first_alone_, d);
            if (s >= sw - 1) {
                f = 0.0f;
                s = sw - 1;
            }
        }
        const bool alone = d >= first_alone_;
        x0_[static_cast<size_t>(d)] = s;
        x1_[static_cast<size_t>(d)] = alone ? s : s + 1;
        a0_[static_cast<size_t>(d)] = 1.0f - f;
        a1_[static_cast<size_t>(d)] = f;
    }
    for (int d = 0; d < dw;) {
        const int s = x0_[static_cast<size_t>(d)];
        const bool alone = d >= first_alone_;
        int e = d + 1;
        while (e < dw && x0_[static_cast<size_t>(e)] == s && (e >= first_alone_) == alone) ++e;
        runs_.push_back({d, e - d, s, x1_[static_cast<size_t>(d)], alone});
        d = e;
    }

    sy_.resize(static_cast<size_t>(dh));
    b0_.resize(static_cast<size_t>(dh));
    b1_.resize(static_cast<size_t>(dh));
    for (int d = 0; d < dh; ++d) {
        float f = static_cast<float>((d + 0.5) * scale_y - 0.5);
        const int s = static_cast<int>(std::floor(f));
        f -= static_cast<float>(s);
        sy_[static_cast<size_t>(d)] = s;
        b0_[static_cast<size_t>(d)] = 1.0f - f;
        b1_[static_cast<size_t>(d)] = f;
    }
    // Runs of >= ~6 output pixels per source cell in both directions make skipping uniform cells pay off.
    const bool big_x = static_cast<int64_t>(dw) >= 6 * static_cast<int64_t>(runs_.size());
    const bool big_y = static_cast<int64_t>(dh) >= 6 * static_cast<int64_t>(sh);
    mode_ = (big_x && big_y) ? Mode::Sparse : Mode::Dense;
}

void MaskUpsampler::run(const float* src, int64_t src_stride, uint8_t* out) const {
    switch (mode_) {
        case Mode::Identity: {
            for (int y = 0; y < sh_; ++y) {
                const float* s = src + y * src_stride;
                uint8_t* o = out + static_cast<size_t>(y) * sw_;
                for (int x = 0; x < sw_; ++x) o[x] = s[x] > 0.0f;
            }
            return;
        }
        case Mode::Area2x: {
            // OpenCV's exact-2x area path: first floor(dw / 4) * 4 columns ((a + b) + (c + d)) * 0.25, the rest
            // (((a + b) + c) + d) * 0.25.
            const int npair = (dw_ / 4) * 4;
            for (int y = 0; y < dh_; ++y) {
                const float* r0 = src + 2 * y * src_stride;
                const float* r1 = r0 + src_stride;
                uint8_t* o = out + static_cast<size_t>(y) * dw_;
                int x = 0;
                for (; x < npair; ++x)
                    o[x] = ((r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1])) * 0.25f > 0.0f;
                for (; x < dw_; ++x)
                    o[x] = (((r0[2 * x] + r0[2 * x + 1]) + r1[2 * x]) + r1[2 * x + 1]) * 0.25f > 0.0f;
            }
            return;
        }
        case Mode::Dense:
        case Mode::Sparse: {
            // work in "resize element" units: a dense output pixel costs ~1/2 of a resize source element, a sparse
            // one (mostly a byte copy) ~1/8
            const int64_t work = static_cast<int64_t>(dh_) * dw_ / (mode_ == Mode::Sparse ? 8 : 2);
            detail::parallel_rows(dh_, work, [&](int y0, int y1) {
                if (mode_ == Mode::Sparse)
                    rows_sparse(src, src_stride, out, y0, y1);
                else
                    rows_dense(src, src_stride, out, y0, y1);
            });
            return;
        }
    }
}

void MaskUpsampler::hrow(const float* s, float* h) const {
    hpass_linear(s, x0_.data(), x1_.data(), a0_.data(), a1_.data(), first_alone_, dw_, h);
}

void MaskUpsampler::rows_dense(const float* src, int64_t stride, uint8_t* out, int y0, int y1) const {
    const int dw = dw_;  // locals: byte stores may alias members
    std::vector<float> buf[2] = {std::vector<float>(static_cast<size_t>(dw_)), std::vector<float>(static_cast<size_t>(dw_))};
    int key[2] = {-1, -1};
    auto get = [&](int r) -> const float* {
        for (int i = 0; i < 2; ++i)
            if (key[i] == r) return buf[i].data();
        const int v = key[0] == -1 ? 0 : (key[1] == -1 ? 1 : (key[0] < key[1] ? 0 : 1));
        hrow(src + r * stride, buf[v].data());
        key[v] = r;
        return buf[v].data();
    };
    for (int y = y0; y < y1; ++y) {
        const int s = sy_[static_cast<size_t>(y)];
        const int r0 = std::min(std::max(s, 0), sh_ - 1);
        const int r1 = std::min(std::max(s + 1, 0), sh_ - 1);
        const float* __restrict h0 = get(r0);
        const float* __restrict h1 = get(r1);
        const float b0 = b0_[static_cast<size_t>(y)], b1 = b1_[static_cast<size_t>(y)];
        vpass_threshold(h0, h1, b0, b1, out + static_cast<size_t>(y) * dw, dw);
    }
}

void MaskUpsampler::rows_sparse(const float* src, int64_t stride, uint8_t* out, int y0, int y1) const {
    const size_t nruns = runs_.size();
    std::vector<uint8_t> cls(nruns);
    std::vector<int> mixed;
    mixed.reserve(nruns);
    const float* a0 = a0_.data();
    const float* a1 = a1_.data();
    int cur = INT_MIN;
    for (int y = y0; y < y1; ++y) {
        const int s = sy_[static_cast<size_t>(y)];
        const int r0 = std::min(std::max(s, 0), sh_ - 1);
        const int r1 = std::min(std::max(s + 1, 0), sh_ - 1);
        const float* S0 = src + r0 * stride;
        const float* S1 = src + r1 * stride;
        uint8_t* o = out + static_cast<size_t>(y) * dw_;
        if (s != cur) {
            // new source row pair: classify every cell, fill the uniform ones, list the mixed ones
            mixed.clear();
            for (size_t i = 0; i < nruns; ++i) {
                const Run& r = runs_[i];
                const float v0 = S0[r.c0], v1 = S0[r.c1], v2 = S1[r.c0], v3 = S1[r.c1];
                if (v0 > 0 && v1 > 0 && v2 > 0 && v3 > 0) {
                    fill_bytes(o + r.start, r.len, 1);
                } else if (v0 <= 0 && v1 <= 0 && v2 <= 0 && v3 <= 0) {
                    fill_bytes(o + r.start, r.len, 0);
                } else {
                    mixed.push_back(static_cast<int>(i));  // straddles 0 (or NaN)
                }
            }
            cur = s;
        } else {
            std::memcpy(o, o - dw_, static_cast<size_t>(dw_));
        }
        const float b0 = b0_[static_cast<size_t>(y)], b1 = b1_[static_cast<size_t>(y)];
        for (const int i : mixed) {
            const Run& r = runs_[static_cast<size_t>(i)];
            const int end = r.start + r.len;
            if (r.clamped) {
                const float h0 = S0[r.c0] * 1.0f, h1 = S1[r.c0] * 1.0f;
                fill_bytes(o + r.start, r.len, static_cast<uint8_t>(h0 * b0 + h1 * b1 > 0.0f));
            } else {
                const float p0 = S0[r.c0], p1 = S0[r.c1], q0 = S1[r.c0], q1 = S1[r.c1];
                for (int x = r.start; x < end; ++x) {
                    const float h0 = p0 * a0[x] + p1 * a1[x];
                    const float h1 = q0 * a0[x] + q1 * a1[x];
                    o[x] = static_cast<uint8_t>(h0 * b0 + h1 * b1 > 0.0f);
                }
            }
        }
    }
}

}  // namespace medsam
