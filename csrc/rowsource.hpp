// Row access to a strided image of any element type, converting to the working type T (uint8_t or float) only when
// the memory layout or the element type requires it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "kernels.hpp"

namespace medsam {
namespace detail {

template <typename S>
inline S load_unaligned(const unsigned char* p) {
    S v;
    std::memcpy(&v, p, sizeof(S));
    return v;
}

inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float32
        const float mag = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -mag : mag;
    }
    uint32_t bits;
    if (exponent == 31)
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
    else
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

// Element conversions with numpy astype semantics (round-to-nearest for float targets, modular for uint8 targets).
template <typename T>
struct Convert;

template <>
struct Convert<float> {
    template <typename S>
    static float from(S v) {
        return static_cast<float>(v);
    }
    static float from_bool(uint8_t v) { return v ? 1.0f : 0.0f; }
    static float from_half(uint16_t v) { return half_to_float(v); }
};

template <>
struct Convert<uint8_t> {
    template <typename S>
    static uint8_t from(S v) {
        static_assert(std::is_integral<S>::value, "uint8 rows are only made from integer data");
        return static_cast<uint8_t>(v);  // modular, like numpy astype(uint8)
    }
    static uint8_t from_bool(uint8_t v) { return v ? 1 : 0; }
    static uint8_t from_half(uint16_t) { throw std::logic_error("float16 -> uint8 rows are not supported"); }
};

template <typename T, typename S>
void convert_row_typed(const unsigned char* p, int64_t w, int64_t cn, int64_t sx, int64_t sc, T* out) {
    const int64_t es = static_cast<int64_t>(sizeof(S));
    if ((sx == cn * es || w == 1) && (cn == 1 || sc == es) && reinterpret_cast<uintptr_t>(p) % alignof(S) == 0) {
        const S* __restrict q = reinterpret_cast<const S*>(p);  // contiguous, aligned row: a vectorisable loop
        const int64_t n = w * cn;
        for (int64_t i = 0; i < n; ++i) out[i] = Convert<T>::from(q[i]);
        return;
    }
    if (cn == 1) {
        for (int64_t x = 0; x < w; ++x) out[x] = Convert<T>::from(load_unaligned<S>(p + x * sx));
    } else {
        for (int64_t x = 0; x < w; ++x)
            for (int64_t c = 0; c < cn; ++c)
                out[x * cn + c] = Convert<T>::from(load_unaligned<S>(p + x * sx + c * sc));
    }
}

template <typename T>
void convert_row(const StridedImage& im, int64_t y, T* out) {
    const unsigned char* p = im.data + y * im.stride_y;
    const int64_t w = im.w, cn = im.cn, sx = im.stride_x, sc = im.stride_c;
    switch (im.type) {
        case ElemType::Bool:
            for (int64_t x = 0; x < w; ++x)
                for (int64_t c = 0; c < cn; ++c) out[x * cn + c] = Convert<T>::from_bool(p[x * sx + c * sc]);
            return;
        case ElemType::U8: return convert_row_typed<T, uint8_t>(p, w, cn, sx, sc, out);
        case ElemType::I8: return convert_row_typed<T, int8_t>(p, w, cn, sx, sc, out);
        case ElemType::U16: return convert_row_typed<T, uint16_t>(p, w, cn, sx, sc, out);
        case ElemType::I16: return convert_row_typed<T, int16_t>(p, w, cn, sx, sc, out);
        case ElemType::U32: return convert_row_typed<T, uint32_t>(p, w, cn, sx, sc, out);
        case ElemType::I32: return convert_row_typed<T, int32_t>(p, w, cn, sx, sc, out);
        case ElemType::U64: return convert_row_typed<T, uint64_t>(p, w, cn, sx, sc, out);
        case ElemType::I64: return convert_row_typed<T, int64_t>(p, w, cn, sx, sc, out);
        case ElemType::F16:
            for (int64_t x = 0; x < w; ++x)
                for (int64_t c = 0; c < cn; ++c)
                    out[x * cn + c] = Convert<T>::from_half(load_unaligned<uint16_t>(p + x * sx + c * sc));
            return;
        case ElemType::F32:
            if constexpr (std::is_same<T, float>::value) {
                return convert_row_typed<T, float>(p, w, cn, sx, sc, out);
            } else {
                throw std::logic_error("float32 -> uint8 rows are not supported");
            }
        case ElemType::F64:
            if constexpr (std::is_same<T, float>::value) {
                return convert_row_typed<T, double>(p, w, cn, sx, sc, out);
            } else {
                throw std::logic_error("float64 -> uint8 rows are not supported");
            }
    }
}

template <typename T>
constexpr ElemType working_type();
template <>
constexpr ElemType working_type<uint8_t>() {
    return ElemType::U8;
}
template <>
constexpr ElemType working_type<float>() {
    return ElemType::F32;
}

// Hands out rows of the image as contiguous interleaved T arrays of w * cn values. When the image already is rows of
// contiguous T pixels (any row stride, negative included) the rows are used in place; otherwise each requested row is
// converted into one of `slots` scratch rows (a slot's previous row is overwritten).
template <typename T>
class RowSource {
public:
    explicit RowSource(const StridedImage& im) : im_(im), rowlen_(im.w * im.cn) {
        const int64_t es = static_cast<int64_t>(sizeof(T));
        const bool aligned = reinterpret_cast<uintptr_t>(im.data) % alignof(T) == 0 && im.stride_y % es == 0;
        direct_ = im.type == working_type<T>() && aligned && (im.cn == 1 || im.stride_c == es) &&
                  (im.w == 1 || im.stride_x == im.cn * es);
    }

    void reserve_slots(int n) {
        if (direct_ || n <= slots_) return;
        scratch_.assign(static_cast<size_t>(n) * static_cast<size_t>(rowlen_), T());
        cached_.assign(static_cast<size_t>(n), -1);
        slots_ = n;
    }

    const T* row(int64_t y, int slot) {
        if (direct_) return reinterpret_cast<const T*>(im_.data + y * im_.stride_y);
        T* dst = scratch_.data() + static_cast<size_t>(slot) * static_cast<size_t>(rowlen_);
        if (cached_[static_cast<size_t>(slot)] != y) {
            convert_row<T>(im_, y, dst);
            cached_[static_cast<size_t>(slot)] = y;
        }
        return dst;
    }

    bool direct() const { return direct_; }

private:
    const StridedImage& im_;
    int64_t rowlen_;
    bool direct_ = false;
    int slots_ = 0;
    std::vector<T> scratch_;
    std::vector<int64_t> cached_;
};

}  // namespace detail
}  // namespace medsam
