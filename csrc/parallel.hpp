// A minimal parallel-for over row ranges with std::thread (no pool: only used for large images, where the ~50 us of
// thread start-up is noise). Exceptions thrown by a worker are re-thrown in the caller after all workers joined.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace medsam {
namespace detail {

// Worker count: MEDSAM_EDGE_NUM_THREADS if set (>= 1), else the hardware concurrency, capped at 8.
inline int max_threads() {
    static const int n = [] {
        if (const char* env = std::getenv("MEDSAM_EDGE_NUM_THREADS")) {
            const int v = std::atoi(env);
            if (v >= 1) return std::min(v, 64);
        }
        const unsigned hc = std::thread::hardware_concurrency();
        return static_cast<int>(std::min(std::max(hc, 1u), 8u));
    }();
    return n;
}

// Runs fn(begin, end) over [0, n) split into contiguous chunks. `work` is a rough element count deciding whether
// threads pay off; chunks are at least `min_rows` rows.
template <typename F>
void parallel_rows(int n, int64_t work, F&& fn, int min_rows = 8) {
    // ~1 ms of single-threaded work per extra thread: below that, start-up and waiting for a busy core cost more
    // than they save (the machines this runs on are often shared).
    constexpr int64_t kMinWorkPerThread = int64_t(1) << 21;
    int nt = static_cast<int>(std::min<int64_t>(max_threads(), work / kMinWorkPerThread));
    nt = std::min(nt, n / std::max(min_rows, 1));
    if (nt <= 1) {
        fn(0, n);
        return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto guarded = [&](int b, int e) {
        try {
            fn(b, e);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(nt - 1));
    const auto bound = [&](int t) { return static_cast<int>(static_cast<int64_t>(n) * t / nt); };
    try {
        for (int t = 1; t < nt; ++t) workers.emplace_back(guarded, bound(t), bound(t + 1));
    } catch (...) {
        // could not start a thread: do the remaining chunks here
        for (int t = static_cast<int>(workers.size()) + 1; t < nt; ++t) guarded(bound(t), bound(t + 1));
    }
    guarded(bound(0), bound(1));
    for (std::thread& w : workers) w.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace medsam
