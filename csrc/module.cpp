// Python bindings of the native kernels: medsam_edge._native.
//
// Every function validates its arguments and raises TypeError / ValueError (never crashes), then releases the GIL
// for the numeric work. Signatures and results match medsam_edge/_kernels_py.py, which defines the semantics.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels.hpp"

namespace py = pybind11;
using medsam::ElemType;
using medsam::StridedImage;

namespace {

constexpr int kTarget = 256;
// Largest accepted side and row length (elements): keeps every index of the kernels inside int32.
constexpr int64_t kMaxSide = int64_t(1) << 24;
constexpr int64_t kMaxRow = int64_t(1) << 28;
constexpr int64_t kMaxChannels = 4;  // cv2 INTER_AREA rejects more channels (general path)

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

py::array to_array(const py::handle& obj, const char* name) {
    if (obj.is_none()) throw py::type_error(std::string(name) + " must be a numpy array, got None");
    py::array a = py::array::ensure(obj);
    if (!a) throw py::type_error(std::string(name) + " must be a numpy array (or convertible to one)");
    return a;
}

int64_t to_index(const py::handle& obj, const char* name) {
    PyObject* idx = PyNumber_Index(obj.ptr());
    if (!idx) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be an integer, got " +
                             py::str(py::type::of(obj)).cast<std::string>());
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        throw py::value_error(std::string(name) + " is out of range");
    }
    return static_cast<int64_t>(v);
}

std::pair<int64_t, int64_t> to_pair(const py::handle& obj, const char* name) {
    if (obj.is_none() || !PySequence_Check(obj.ptr()))
        throw py::type_error(std::string(name) + " must be a pair of integers (h, w)");
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    if (py::len(seq) != 2)
        throw py::value_error(std::string(name) + " must have 2 elements (h, w), got " + std::to_string(py::len(seq)));
    return {to_index(seq[0], name), to_index(seq[1], name)};
}

// Element type of a numeric array, or false when numpy must convert it first (non-native byte order, long double...).
bool native_elem_type(const py::array& a, ElemType& t) {
    const py::dtype dt = a.dtype();
    const char kind = dt.kind();
    const py::ssize_t size = dt.itemsize();
    if (size > 1 && !dt.attr("isnative").cast<bool>()) return false;
    switch (kind) {
        case 'b': t = ElemType::Bool; return size == 1;
        case 'u':
            if (size == 1) t = ElemType::U8;
            else if (size == 2) t = ElemType::U16;
            else if (size == 4) t = ElemType::U32;
            else if (size == 8) t = ElemType::U64;
            else return false;
            return true;
        case 'i':
            if (size == 1) t = ElemType::I8;
            else if (size == 2) t = ElemType::I16;
            else if (size == 4) t = ElemType::I32;
            else if (size == 8) t = ElemType::I64;
            else return false;
            return true;
        case 'f':
            if (size == 2) t = ElemType::F16;
            else if (size == 4) t = ElemType::F32;
            else if (size == 8) t = ElemType::F64;
            else return false;
            return true;
        default: return false;
    }
}

bool is_real_kind(const py::array& a) {
    const char k = a.dtype().kind();
    return k == 'b' || k == 'u' || k == 'i' || k == 'f';
}

StridedImage view_of(const py::array& a) {
    StridedImage im;
    im.data = static_cast<const unsigned char*>(a.data());
    im.h = a.shape(0);
    im.w = a.shape(1);
    im.stride_y = a.strides(0);
    im.stride_x = a.strides(1);
    if (a.ndim() == 3) {
        im.cn = a.shape(2);
        im.stride_c = a.strides(2);
    } else {
        im.cn = 1;
        im.stride_c = 0;
    }
    return im;
}

void check_image_size(int64_t h, int64_t w, int64_t cn, const char* name) {
    if (h > kMaxSide || w > kMaxSide || w * cn > kMaxRow)
        throw py::value_error(std::string(name) + " is too large for the native kernels (" + std::to_string(h) + " x " +
                              std::to_string(w) + " x " + std::to_string(cn) + ")");
}

std::pair<int, int> resized_shape(int64_t h, int64_t w) {
    const double scale = kTarget * 1.0 / static_cast<double>(std::max(h, w));
    return {static_cast<int>(static_cast<double>(h) * scale + 0.5), static_cast<int>(static_cast<double>(w) * scale + 0.5)};
}

// ------------------------------------------------------------------------------------------------ preprocess
// min / max of the resized values, as numpy's min() / max() (NaN if any value is NaN).
void value_range(const uint8_t* r, size_t n, double& lo, double& hi) {
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < n; ++i) {
        mn = std::min(mn, r[i]);
        mx = std::max(mx, r[i]);
    }
    lo = mn;
    hi = mx;
}

void value_range(const float* r, size_t n, double& lo, double& hi) {
    // four independent accumulators (exact: min/max do not round); NaN tracked separately
    float mn[4] = {r[0], r[0], r[0], r[0]}, mx[4] = {r[0], r[0], r[0], r[0]};
    bool nan = false;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        for (int k = 0; k < 4; ++k) {
            const float v = r[i + static_cast<size_t>(k)];
            nan |= v != v;
            mn[k] = v < mn[k] ? v : mn[k];
            mx[k] = v > mx[k] ? v : mx[k];
        }
    }
    for (; i < n; ++i) {
        const float v = r[i];
        nan |= v != v;
        mn[0] = v < mn[0] ? v : mn[0];
        mx[0] = v > mx[0] ? v : mx[0];
    }
    if (nan) {
        lo = hi = std::numeric_limits<double>::quiet_NaN();
        return;
    }
    lo = std::min(std::min(mn[0], mn[1]), std::min(mn[2], mn[3]));
    hi = std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3]));
}

// Writes the normalised resized image into the (3, 256, 256) planes of out, zero padded:
// float32((double(x) - lo) / max(hi - lo, 1e-8)), exactly as the twin computes it.
template <typename T>
void normalise_into(const T* r, int nh, int nw, int cn, float* out) {
    const size_t n = static_cast<size_t>(nh) * nw * cn;
    double lo, hi;
    value_range(r, n, lo, hi);
    const double d = hi - lo;
    const double denom = (1e-8 > d) ? 1e-8 : d;  // Python's max(hi - lo, 1e-8)
    const size_t plane = static_cast<size_t>(kTarget) * kTarget;
    float* p0 = out;
    float* p1 = out + plane;
    float* p2 = out + 2 * plane;

    float lut[256];  // uint8: at most 256 distinct values, so divide once per value
    if constexpr (std::is_same<T, uint8_t>::value)
        for (int v = 0; v < 256; ++v) lut[v] = static_cast<float>((static_cast<double>(v) - lo) / denom);
    auto norm = [&](T v) -> float {
        if constexpr (std::is_same<T, uint8_t>::value)
            return lut[v];
        else
            return static_cast<float>((static_cast<double>(v) - lo) / denom);
    };

    for (int y = 0; y < nh; ++y) {
        const size_t o = static_cast<size_t>(y) * kTarget;
        const T* s = r + static_cast<size_t>(y) * nw * cn;
        if (cn == 1) {
            for (int x = 0; x < nw; ++x) {
                const float v = norm(s[x]);
                p0[o + x] = v;
                p1[o + x] = v;
                p2[o + x] = v;
            }
        } else {
            for (int x = 0; x < nw; ++x) {
                p0[o + x] = norm(s[3 * x]);
                p1[o + x] = norm(s[3 * x + 1]);
                p2[o + x] = norm(s[3 * x + 2]);
            }
        }
        for (float* p : {p0, p1, p2}) std::memset(p + o + nw, 0, sizeof(float) * static_cast<size_t>(kTarget - nw));
    }
    for (float* p : {p0, p1, p2})
        std::memset(p + static_cast<size_t>(nh) * kTarget, 0, sizeof(float) * static_cast<size_t>(kTarget - nh) * kTarget);
}

void preprocess_kernel(const StridedImage& im, int nh, int nw, float* out) {
    const size_t n = static_cast<size_t>(nh) * nw * static_cast<size_t>(im.cn);
    if (im.type == ElemType::U8) {
        std::vector<uint8_t> r(n);
        medsam::resize_area_u8(im, nh, nw, r.data());
        normalise_into(r.data(), nh, nw, static_cast<int>(im.cn), out);
    } else {
        std::vector<float> r(n);
        medsam::resize_area_f32(im, nh, nw, r.data());
        normalise_into(r.data(), nh, nw, static_cast<int>(im.cn), out);
    }
}

py::tuple preprocess(const py::object& image_obj, const py::object& out_obj) {
    py::array image = to_array(image_obj, "image");
    if (!is_real_kind(image))
        throw py::type_error("image must hold real numbers (bool, integer or float), got dtype " + dtype_str(image));
    const py::ssize_t nd = image.ndim();
    if (nd != 2 && nd != 3)
        throw py::value_error("image must be (H, W), (H, W, 1) or (H, W, 3), got shape " + shape_str(image));
    if (nd == 3 && image.shape(2) != 1 && image.shape(2) != 3)
        throw py::value_error("image must have 1 or 3 channels, got shape " + shape_str(image));
    const int64_t h = image.shape(0), w = image.shape(1);
    if (h < 1 || w < 1) throw py::value_error("image must not be empty, got shape " + shape_str(image));
    check_image_size(h, w, nd == 3 ? image.shape(2) : 1, "image");

    ElemType t;
    if (!native_elem_type(image, t)) {  // e.g. big-endian or long double: let numpy convert, as the twin does
        image = py::array(image.attr("astype")(py::dtype::of<float>()));
        t = ElemType::F32;
    }
    const auto hw = resized_shape(h, w);
    const int nh = hw.first, nw = hw.second;
    if (nh < 1 || nw < 1)
        throw py::value_error("image of shape " + shape_str(image) +
                              " is too elongated: its short side would resize to 0 pixels");

    py::array_t<float> out;
    if (out_obj.is_none()) {
        out = py::array_t<float>({1, 3, kTarget, kTarget});
    } else {
        if (!py::isinstance<py::array>(out_obj)) throw py::type_error("out must be a numpy array or None");
        py::array o = py::reinterpret_borrow<py::array>(out_obj);
        if (o.dtype().kind() != 'f' || o.dtype().itemsize() != 4 || !o.dtype().attr("isnative").cast<bool>())
            throw py::type_error("out must be float32, got dtype " + dtype_str(o));
        if (o.ndim() != 4 || o.shape(0) != 1 || o.shape(1) != 3 || o.shape(2) != kTarget || o.shape(3) != kTarget)
            throw py::value_error("out must have shape (1, 3, 256, 256), got " + shape_str(o));
        if (!(o.flags() & py::array::c_style) || !o.attr("flags").attr("aligned").cast<bool>())
            throw py::value_error("out must be C-contiguous and aligned");
        if (!o.writeable()) throw py::value_error("out must be writeable");
        out = py::reinterpret_borrow<py::array_t<float>>(out_obj);
    }
    float* optr = out.mutable_data();
    StridedImage im = view_of(image);
    im.type = t;
    {
        py::gil_scoped_release nogil;
        preprocess_kernel(im, nh, nw, optr);
    }
    return py::make_tuple(out, py::make_tuple(nh, nw));
}

// ------------------------------------------------------------------------------------------------ postprocess
py::array postprocess(const py::object& logits_obj, const py::object& new_hw, const py::object& orig_hw) {
    if (logits_obj.is_none()) throw py::type_error("logits must be a float array, got None");
    {
        py::array probe = py::array::ensure(logits_obj);
        if (!probe || !is_real_kind(probe))
            throw py::type_error("logits must be a real numeric array (B, 256, 256) or (B, 1, 256, 256)");
    }
    auto lg = py::array_t<float, py::array::forcecast>::ensure(logits_obj);
    if (!lg) throw py::type_error("logits must be convertible to float32");
    const py::ssize_t nd = lg.ndim();
    if (nd != 3 && nd != 4)
        throw py::value_error("logits must be (B, h, w) or (B, 1, h, w), got shape " + shape_str(lg));
    if (nd == 4 && lg.shape(1) < 1) throw py::value_error("logits has no channel, shape " + shape_str(lg));
    const int64_t b = lg.shape(0), lh = lg.shape(nd - 2), lw = lg.shape(nd - 1);
    const auto nhw = to_pair(new_hw, "new_hw");
    const auto ohw = to_pair(orig_hw, "orig_hw");
    if (nhw.first < 1 || nhw.second < 1 || nhw.first > lh || nhw.second > lw)
        throw py::value_error("new_hw " + std::to_string(nhw.first) + ", " + std::to_string(nhw.second) +
                              " must be within the logits' spatial shape " + shape_str(lg));
    if (ohw.first < 1 || ohw.second < 1) throw py::value_error("orig_hw must be positive, got " +
                                                               std::to_string(ohw.first) + ", " + std::to_string(ohw.second));
    check_image_size(ohw.first, ohw.second, 1, "orig_hw");
    const int nh = static_cast<int>(nhw.first), nw = static_cast<int>(nhw.second);
    const int H = static_cast<int>(ohw.first), W = static_cast<int>(ohw.second);

    py::array_t<bool> out({static_cast<py::ssize_t>(b), static_cast<py::ssize_t>(H), static_cast<py::ssize_t>(W)});
    if (b == 0) return std::move(out);
    uint8_t* optr = reinterpret_cast<uint8_t*>(out.mutable_data());
    const unsigned char* base = reinterpret_cast<const unsigned char*>(lg.data());
    const int64_t sb = lg.strides(0), sy = lg.strides(nd - 2), sx = lg.strides(nd - 1);
    {
        py::gil_scoped_release nogil;
        medsam::MaskUpsampler up(nh, nw, H, W);
        // rows of contiguous, aligned floats are used in place; anything else is copied into a crop buffer
        const int64_t fs = static_cast<int64_t>(sizeof(float));
        const bool in_place = (sx == fs || nw == 1) && sy % fs == 0 && sb % fs == 0 &&
                              reinterpret_cast<uintptr_t>(base) % alignof(float) == 0;
        std::vector<float> crop(in_place ? 0 : static_cast<size_t>(nh) * nw);
        for (int64_t i = 0; i < b; ++i) {
            uint8_t* o = optr + static_cast<size_t>(i) * static_cast<size_t>(H) * static_cast<size_t>(W);
            if (in_place) {
                up.run(reinterpret_cast<const float*>(base + i * sb), sy / fs, o);
                continue;
            }
            for (int y = 0; y < nh; ++y) {
                const unsigned char* row = base + i * sb + y * sy;
                float* c = crop.data() + static_cast<size_t>(y) * nw;
                for (int x = 0; x < nw; ++x) std::memcpy(c + x, row + x * sx, sizeof(float));
            }
            up.run(crop.data(), nw, o);
        }
    }
    return std::move(out);
}

// ------------------------------------------------------------------------------------------------ label_map
py::array label_map(const py::object& masks_obj) {
    py::array m = to_array(masks_obj, "masks");
    if (m.dtype().kind() != 'b') throw py::type_error("masks must be bool, got dtype " + dtype_str(m));
    if (m.ndim() != 3) throw py::value_error("masks must be (N, H, W), got shape " + shape_str(m));
    const int64_t n = m.shape(0), h = m.shape(1), w = m.shape(2);
    if (n > 65535) throw py::value_error("at most 65535 masks fit a uint16 label map, got " + std::to_string(n));
    check_image_size(h, w, 1, "masks");  // (also keeps the output's stride computation inside int64)
    py::array_t<uint16_t> out({static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    if (h == 0 || w == 0) return std::move(out);  // (a (n, 2^40, 0) view would otherwise loop over 2^40 empty rows)
    uint16_t* o = out.mutable_data();
    const unsigned char* base = static_cast<const unsigned char*>(m.data());
    const int64_t s0 = m.strides(0), s1 = m.strides(1), s2 = m.strides(2);
    {
        py::gil_scoped_release nogil;
        std::fill(o, o + static_cast<size_t>(h) * static_cast<size_t>(w), uint16_t(0));
        for (int64_t i = 0; i < n; ++i) {
            const uint16_t label = static_cast<uint16_t>(i + 1);
            for (int64_t y = 0; y < h; ++y) {
                const unsigned char* r = base + i * s0 + y * s1;
                uint16_t* orow = o + y * w;
                if (s2 == 1) {
                    for (int64_t x = 0; x < w; ++x) orow[x] = r[x] ? label : orow[x];
                } else {
                    for (int64_t x = 0; x < w; ++x) orow[x] = r[x * s2] ? label : orow[x];
                }
            }
        }
    }
    return std::move(out);
}

// ------------------------------------------------------------------------------------------------ box_from_mask
py::object box_from_mask(const py::object& mask_obj, const py::object& margin_obj) {
    py::array m = to_array(mask_obj, "mask");
    const char kind = m.dtype().kind();
    if (kind != 'b' && kind != 'u' && kind != 'i')
        throw py::type_error("mask must be uint8 (or bool / integer labels), got dtype " + dtype_str(m));
    if (m.ndim() != 2) throw py::value_error("mask must be (H, W), got shape " + shape_str(m));
    const int64_t margin = to_index(margin_obj, "margin");
    if (margin > (int64_t(1) << 40) || margin < -(int64_t(1) << 40)) throw py::value_error("margin is out of range");
    const int64_t h = m.shape(0), w = m.shape(1);
    if (h < 1 || w < 1) throw py::value_error("mask must not be empty, got shape " + shape_str(m));
    check_image_size(h, w, 1, "mask");
    ElemType t;
    if (!native_elem_type(m, t)) {
        m = py::array(m.attr("astype")(py::dtype::of<uint8_t>()));
        t = ElemType::U8;
    }
    const auto hw = resized_shape(h, w);
    const int nh = hw.first, nw = hw.second;
    if (nh < 1 || nw < 1)
        throw py::value_error("mask of shape " + shape_str(m) + " is too elongated: its short side would resize to 0");
    StridedImage im = view_of(m);
    im.type = t;
    int x0 = nw, x1 = -1, y0 = nh, y1 = -1;
    {
        py::gil_scoped_release nogil;
        std::vector<uint8_t> small(static_cast<size_t>(nh) * nw);
        medsam::resize_area_u8(im, nh, nw, small.data());
        for (int y = 0; y < nh; ++y) {
            const uint8_t* r = small.data() + static_cast<size_t>(y) * nw;
            for (int x = 0; x < nw; ++x) {
                if (r[x]) {
                    x0 = std::min(x0, x);
                    x1 = std::max(x1, x);
                    y0 = std::min(y0, y);
                    y1 = std::max(y1, y);
                }
            }
        }
    }
    if (x1 < 0) return py::none();
    py::array_t<int64_t> box(4);
    int64_t* b = box.mutable_data();
    // clamped to [0, 256] on both sides (a negative margin moves the sides inwards, possibly past each other)
    auto clamp = [](int64_t v) { return std::min<int64_t>(kTarget, std::max<int64_t>(0, v)); };
    b[0] = clamp(x0 - margin);
    b[1] = clamp(y0 - margin);
    b[2] = clamp(x1 + margin);
    b[3] = clamp(y1 + margin);
    return std::move(box);
}

// ------------------------------------------------------------------------------------------------ resize_area
py::array resize_area(const py::object& image_obj, const py::object& new_h_obj, const py::object& new_w_obj) {
    py::array image = to_array(image_obj, "image");
    const char kind = image.dtype().kind();
    const py::ssize_t isz = image.dtype().itemsize();
    const bool u8 = kind == 'u' && isz == 1, f32 = kind == 'f' && isz == 4;
    if (!u8 && !f32) throw py::type_error("resize_area supports uint8 and float32 images, got dtype " + dtype_str(image));
    const py::ssize_t nd = image.ndim();
    if (nd != 2 && nd != 3) throw py::value_error("image must be (H, W) or (H, W, C), got shape " + shape_str(image));
    const int64_t nh = to_index(new_h_obj, "new_h"), nw = to_index(new_w_obj, "new_w");
    const int64_t h = image.shape(0), w = image.shape(1), cn = nd == 3 ? image.shape(2) : 1;
    if (h < 1 || w < 1 || cn < 1) throw py::value_error("image must not be empty, got shape " + shape_str(image));
    if (cn > kMaxChannels) throw py::value_error("image has too many channels (at most 4), got shape " + shape_str(image));
    if (nh < 1 || nw < 1)
        throw py::value_error("new size must be positive, got " + std::to_string(nh) + " x " + std::to_string(nw));
    check_image_size(h, w, cn, "image");
    check_image_size(nh, nw, cn, "the resized image");
    ElemType t;
    if (!native_elem_type(image, t)) {
        image = py::array(image.attr("astype")(py::dtype::of<float>()));
        t = ElemType::F32;
    }
    std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(nh), static_cast<py::ssize_t>(nw)};
    if (nd == 3) shape.push_back(static_cast<py::ssize_t>(cn));
    StridedImage im = view_of(image);
    im.type = t;
    if (t == ElemType::U8) {
        py::array_t<uint8_t> out(shape);
        uint8_t* o = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            medsam::resize_area_u8(im, static_cast<int>(nh), static_cast<int>(nw), o);
        }
        return std::move(out);
    }
    py::array_t<float> out(shape);
    float* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        medsam::resize_area_f32(im, static_cast<int>(nh), static_cast<int>(nw), o);
    }
    return std::move(out);
}

// ------------------------------------------------------------------------------------------------ paste_masks
std::vector<int64_t> int_values(const py::object& obj, const char* name, int64_t n, int64_t lo, int64_t hi) {
    py::array a = to_array(obj, name);
    if (n == 0 && a.ndim() == 1 && a.shape(0) == 0) return {};  // [] (float64 to numpy) for zero boxes
    const char kind = a.dtype().kind();
    if (kind != 'u' && kind != 'i' && kind != 'b')
        throw py::type_error(std::string(name) + " must hold integers, got dtype " + dtype_str(a));
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(n) + ",), got " + shape_str(a));
    auto v = py::array_t<int64_t, py::array::forcecast>::ensure(a);
    if (!v) throw py::type_error(std::string(name) + " must be convertible to int64");
    std::vector<int64_t> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const int64_t x = v.at(i);
        if (x < lo || x > hi)
            throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(x) +
                                  " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        out[static_cast<size_t>(i)] = x;
    }
    return out;
}

py::tuple paste_masks(const py::object& logits_obj, const py::object& new_hw, const py::object& labels_obj,
                      const py::object& values_obj, const py::object& marks_obj, const py::object& margin_obj) {
    if (logits_obj.is_none()) throw py::type_error("logits must be a float array, got None");
    {
        py::array probe = py::array::ensure(logits_obj);
        if (!probe || !is_real_kind(probe))
            throw py::type_error("logits must be a real numeric array (B, 256, 256) or (B, 1, 256, 256)");
    }
    auto lg = py::array_t<float, py::array::forcecast | py::array::c_style>::ensure(logits_obj);
    if (!lg) throw py::type_error("logits must be convertible to float32");
    const py::ssize_t nd = lg.ndim();
    if (nd != 3 && nd != 4)
        throw py::value_error("logits must be (B, h, w) or (B, 1, h, w), got shape " + shape_str(lg));
    if (nd == 4 && lg.shape(1) < 1) throw py::value_error("logits has no channel, shape " + shape_str(lg));
    const int64_t b = lg.shape(0), lh = lg.shape(nd - 2), lw = lg.shape(nd - 1);
    if (reinterpret_cast<uintptr_t>(lg.data()) % alignof(float) != 0) {
        // a C-contiguous float32 view at an odd address passes ensure() as it is: the kernel reads whole floats
        py::array_t<float> aligned(std::vector<py::ssize_t>(lg.shape(), lg.shape() + nd));
        std::memcpy(aligned.mutable_data(), lg.data(), static_cast<size_t>(lg.nbytes()));
        lg = aligned;
    }

    if (labels_obj.is_none() || !py::isinstance<py::array>(labels_obj))
        throw py::type_error("labels must be a writeable (H, W) uint16 numpy array");
    py::array lab = py::reinterpret_borrow<py::array>(labels_obj);
    if (lab.dtype().kind() != 'u' || lab.dtype().itemsize() != 2 || !lab.dtype().attr("isnative").cast<bool>())
        throw py::type_error("labels must be uint16, got dtype " + dtype_str(lab));
    if (lab.ndim() != 2) throw py::value_error("labels must be (H, W), got shape " + shape_str(lab));
    if (!lab.writeable()) throw py::value_error("labels must be writeable");
    if (!lab.attr("flags").attr("aligned").cast<bool>()) throw py::value_error("labels must be aligned");
    const int64_t H = lab.shape(0), W = lab.shape(1);
    if (H < 1 || W < 1) throw py::value_error("labels must not be empty, got shape " + shape_str(lab));
    check_image_size(H, W, 1, "labels");

    const auto nhw = to_pair(new_hw, "new_hw");
    if (nhw.first < 1 || nhw.second < 1 || nhw.first > lh || nhw.second > lw)
        throw py::value_error("new_hw " + std::to_string(nhw.first) + ", " + std::to_string(nhw.second) +
                              " must be within the logits' spatial shape " + shape_str(lg));
    const auto box_hw = resized_shape(H, W);
    if (box_hw.first < 1 || box_hw.second < 1)
        throw py::value_error("labels of shape " + shape_str(lab) + " are too elongated: the short side would resize to 0");
    const std::vector<int64_t> values = int_values(values_obj, "values", b, 1, 65535);
    const std::vector<int64_t> marks = int_values(marks_obj, "marks", b, 1, 255);
    const int64_t margin = to_index(margin_obj, "margin");
    if (margin > (int64_t(1) << 40) || margin < -(int64_t(1) << 40)) throw py::value_error("margin is out of range");

    const int nh = static_cast<int>(nhw.first), nw = static_cast<int>(nhw.second);
    medsam::LabelSlice ls;
    ls.data = static_cast<unsigned char*>(lab.mutable_data());
    ls.h = static_cast<int>(H);
    ls.w = static_cast<int>(W);
    ls.stride_y = lab.strides(0);
    ls.stride_x = lab.strides(1);
    const float* base = lg.data();
    const int64_t plane = lh * lw;  // c_style: box i starts at i * channels * plane, rows lw floats apart
    const int64_t per_box = nd == 4 ? lg.shape(1) * plane : plane;
    std::vector<medsam::PasteResult> res(static_cast<size_t>(b));
    std::vector<std::vector<uint8_t>> crops(static_cast<size_t>(b));
    {
        py::gil_scoped_release nogil;
        medsam::MaskUpsampler up(nh, nw, static_cast<int>(H), static_cast<int>(W));
        std::vector<uint8_t> mask(static_cast<size_t>(H) * static_cast<size_t>(W));
        for (int64_t i = 0; i < b; ++i) {
            medsam::PasteResult& r = res[static_cast<size_t>(i)];
            medsam::paste_mask(up, base + i * per_box, lw, ls, static_cast<uint16_t>(values[static_cast<size_t>(i)]),
                               static_cast<uint8_t>(marks[static_cast<size_t>(i)]), margin, box_hw.first, box_hw.second,
                               mask.data(), r);
            if (r.y1 <= r.y0) continue;
            const int ch = r.y1 - r.y0, cw = r.x1 - r.x0;
            std::vector<uint8_t>& c = crops[static_cast<size_t>(i)];
            c.resize(static_cast<size_t>(ch) * cw);
            for (int y = 0; y < ch; ++y) {
                const uint8_t* m = mask.data() + static_cast<size_t>(r.y0 + y) * W + r.x0;
                uint8_t* o = c.data() + static_cast<size_t>(y) * cw;
                for (int x = 0; x < cw; ++x) o[x] = m[x] != 0;
            }
        }
    }
    py::array_t<int64_t> boxes({static_cast<py::ssize_t>(b), static_cast<py::ssize_t>(4)});
    int64_t* bp = boxes.mutable_data();
    py::list out_crops;
    for (int64_t i = 0; i < b; ++i) {
        const medsam::PasteResult& r = res[static_cast<size_t>(i)];
        for (int k = 0; k < 4; ++k) bp[i * 4 + k] = r.has_box ? r.box[k] : -1;
        if (r.y1 <= r.y0) {
            out_crops.append(py::none());
            continue;
        }
        py::array_t<bool> crop({static_cast<py::ssize_t>(r.y1 - r.y0), static_cast<py::ssize_t>(r.x1 - r.x0)});
        const std::vector<uint8_t>& c = crops[static_cast<size_t>(i)];
        std::memcpy(crop.mutable_data(), c.data(), c.size());
        out_crops.append(py::make_tuple(r.y0, r.x0, crop));
    }
    return py::make_tuple(boxes, out_crops);
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Native (C++) pre/post-processing kernels of medsam_edge; semantics in medsam_edge._kernels_py.";
    m.attr("TARGET") = kTarget;
    m.def("preprocess", &preprocess, py::arg("image"), py::arg("out") = py::none(),
          "Image (H, W), (H, W, 1) or (H, W, 3) of any real dtype -> ((1, 3, 256, 256) float32 tensor, (new_h, new_w)).");
    m.def("postprocess", &postprocess, py::arg("logits"), py::arg("new_hw"), py::arg("orig_hw"),
          "(B, h, w) or (B, 1, h, w) logits -> (B, H, W) bool masks: crop, bilinear upsample, logit > 0.");
    m.def("label_map", &label_map, py::arg("masks"), "(N, H, W) bool -> (H, W) uint16; mask i -> i + 1, later wins.");
    m.def("resize_area", &resize_area, py::arg("image"), py::arg("new_h"), py::arg("new_w"),
          "OpenCV INTER_AREA resize of a uint8 or float32 (H, W) / (H, W, C) image.");
    m.def("box_from_mask", &box_from_mask, py::arg("mask"), py::arg("margin") = 3,
          "Next-slice box (int64 [x_min, y_min, x_max, y_max] in 256 space) from a (H, W) uint8 mask, or None.");
    m.def("paste_masks", &paste_masks, py::arg("logits"), py::arg("new_hw"), py::arg("labels"), py::arg("values"),
          py::arg("marks"), py::arg("margin") = 3,
          "One 3D-loop slice: logits -> masks raised into a (H, W) uint16 label slice in place; returns ((B, 4) int64 "
          "next boxes in 256 space, -1 rows when empty; [(y0, x0, bool crop) or None per box]).");
}
