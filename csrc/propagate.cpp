// One slice of the 3D propagation loop, per box: logits -> upsampled thresholded mask, written into a uint16 label
// slice (label = max(label, value) where the mask is set), the mask's bounding box, and the next slice's box by the
// reference rule (the mask holding the value `mark` resized with the longest-side INTER_AREA rule, tight box of the
// pixels > 0, widened by `margin`, clamped to [0, 256]). Semantics: medsam_edge._kernels_py.paste_masks.

#include <algorithm>
#include <vector>

#include "kernels.hpp"

namespace medsam {

void paste_mask(const MaskUpsampler& up, const float* src, int64_t src_stride, const LabelSlice& labels, uint16_t value,
                uint8_t mark, int64_t margin, int nh_box, int nw_box, uint8_t* mask, PasteResult& res) {
    const int h = labels.h, w = labels.w;
    up.run(src, src_stride, mask);
    int y0 = h, y1 = -1, x0 = w, x1 = -1;
    for (int y = 0; y < h; ++y) {
        uint8_t* m = mask + static_cast<size_t>(y) * w;
        unsigned char* lrow = labels.data + y * labels.stride_y;
        int first = -1, last = -1;
        for (int x = 0; x < w; ++x) {
            if (!m[x]) continue;
            if (first < 0) first = x;
            last = x;
            uint16_t* l = reinterpret_cast<uint16_t*>(lrow + x * labels.stride_x);
            if (*l < value) *l = value;
            m[x] = mark;
        }
        if (first >= 0) {
            y0 = std::min(y0, y);
            y1 = y;
            x0 = std::min(x0, first);
            x1 = std::max(x1, last);
        }
    }
    res.y0 = y0;
    res.x0 = x0;
    res.y1 = y1 + 1;  // exclusive; y1 + 1 <= y0 when the mask is empty
    res.x1 = x1 + 1;
    res.has_box = false;
    if (y1 < 0 || mark == 0) return;  // nothing > 0 to resize

    StridedImage im;
    im.data = mask;
    im.h = h;
    im.w = w;
    im.cn = 1;
    im.stride_y = w;
    im.stride_x = 1;
    im.stride_c = 0;
    im.type = ElemType::U8;
    std::vector<uint8_t> small(static_cast<size_t>(nh_box) * nw_box);
    resize_area_u8(im, nh_box, nw_box, small.data());
    int bx0 = nw_box, bx1 = -1, by0 = nh_box, by1 = -1;
    for (int y = 0; y < nh_box; ++y) {
        const uint8_t* r = small.data() + static_cast<size_t>(y) * nw_box;
        for (int x = 0; x < nw_box; ++x) {
            if (r[x]) {
                bx0 = std::min(bx0, x);
                bx1 = std::max(bx1, x);
                by0 = std::min(by0, y);
                by1 = std::max(by1, y);
            }
        }
    }
    if (bx1 < 0) return;
    // each coordinate clamped to [0, 256], like box_from_mask (a negative margin moves the sides inwards)
    auto clamp = [](int64_t v) { return std::min<int64_t>(256, std::max<int64_t>(0, v)); };
    res.box[0] = clamp(bx0 - margin);
    res.box[1] = clamp(by0 - margin);
    res.box[2] = clamp(bx1 + margin);
    res.box[3] = clamp(by1 + margin);
    res.has_box = true;
}

}  // namespace medsam
