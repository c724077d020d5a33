// Native kernels of medsam_edge (no Python in here; see module.cpp for the bindings).
//
// The semantics are defined by the NumPy/OpenCV twin medsam_edge/_kernels_py.py. The resize kernels reproduce the
// arithmetic of OpenCV's cv::resize (INTER_AREA for uint8 and float32, INTER_LINEAR for float32) operation by
// operation so that results are bit-identical; the comments next to each kernel state the rule being reproduced.
// This is an independent implementation written from those rules.
//
// Build note: exactness relies on IEEE single-precision arithmetic without fused multiply-add contraction or
// fast-math reassociation (CMakeLists.txt passes -ffp-contract=off and never -ffast-math).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace medsam {

enum class ElemType : int { Bool, U8, I8, U16, I16, U32, I32, U64, I64, F16, F32, F64 };

// A read-only strided (H, W, C) view of an image in memory owned elsewhere. Strides are in bytes and may be negative
// or zero; no alignment is assumed.
struct StridedImage {
    const unsigned char* data = nullptr;  // address of element (0, 0, 0)
    int64_t h = 0, w = 0, cn = 1;
    int64_t stride_y = 0, stride_x = 0, stride_c = 0;
    ElemType type = ElemType::U8;
};

// cv::resize(src, (dw, dh), interpolation=INTER_AREA) for an 8-bit image. The source may be any integer/bool element
// type (converted element-wise with a modular cast, like numpy's astype(uint8)). dst: dh * dw * cn interleaved.
void resize_area_u8(const StridedImage& src, int dh, int dw, uint8_t* dst);

// Same for float32 images: the source is converted element-wise to float32 (numpy astype semantics), then resized
// with OpenCV's float32 INTER_AREA arithmetic. dst: dh * dw * cn interleaved.
void resize_area_f32(const StridedImage& src, int dh, int dw, float* dst);

// Bilinear (half-pixel centres, OpenCV INTER_LINEAR / torch align_corners=False) upsampling of a (sh, sw) float32
// plane to (dh, dw) fused with the threshold value > 0. Coefficient tables are computed once per size triple and
// reused for every mask of a batch; run() may split the rows over threads.
class MaskUpsampler {
public:
    MaskUpsampler(int sh, int sw, int dh, int dw);
    // src: sh rows of sw float32 values, rows src_stride floats apart. out: dh * dw bytes (0/1).
    void run(const float* src, int64_t src_stride, uint8_t* out) const;

private:
    struct Run {
        int start, len;  // output columns [start, start + len)
        int c0, c1;      // source columns (c1 == c0 for a clamped run: the last column used alone)
        bool clamped;
    };
    void rows_sparse(const float* src, int64_t stride, uint8_t* out, int y0, int y1) const;
    void rows_dense(const float* src, int64_t stride, uint8_t* out, int y0, int y1) const;
    void hrow(const float* s, float* h) const;

    int sh_, sw_, dh_, dw_;
    enum class Mode { Identity, Area2x, Dense, Sparse } mode_ = Mode::Dense;
    // per output column: source columns, weights; columns >= first_alone_ use source column x0 alone
    std::vector<int> x0_, x1_;
    std::vector<float> a0_, a1_;
    int first_alone_ = 0;
    std::vector<Run> runs_;
    std::vector<int> sy_;  // unclamped top source row per output row
    std::vector<float> b0_, b1_;
};

// A writable (h, w) uint16 label slice in memory owned elsewhere; strides in bytes.
struct LabelSlice {
    unsigned char* data = nullptr;
    int h = 0, w = 0;
    int64_t stride_y = 0, stride_x = 0;
};

struct PasteResult {
    int y0 = 0, x0 = 0, y1 = 0, x1 = 0;  // bounding box of the mask, exclusive ends (empty: y1 <= y0)
    bool has_box = false;                 // next slice's box found
    int64_t box[4] = {-1, -1, -1, -1};    // [x_min, y_min, x_max, y_max] in 256 space
};

// One box of one slice of the 3D loop (semantics: medsam_edge._kernels_py.paste_masks): upsample + threshold the
// logits with `up` into `mask` (labels.h * labels.w bytes, overwritten: 0 or `mark` on return), raise the label slice
// to `value` where the mask is set, report the mask's bounding box and the next slice's box in 256 space (the
// mask resized to (nh_box, nw_box) with INTER_AREA, tight box of pixels > 0 widened by `margin`, clamped to [0, 256]).
void paste_mask(const MaskUpsampler& up, const float* src, int64_t src_stride, const LabelSlice& labels, uint16_t value,
                uint8_t mark, int64_t margin, int nh_box, int nw_box, uint8_t* mask, PasteResult& res);

}  // namespace medsam
