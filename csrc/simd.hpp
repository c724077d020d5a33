// Function multi-versioning for the hot loops: on x86-64 Linux with GCC (or Clang >= 14) a function marked
// MEDSAM_CLONES is compiled for the SSE2 baseline and for AVX2, and the dynamic loader picks one per CPU. The shipped
// code needs no -march flag. Both versions do the same IEEE operations in the same order (no FMA: the build uses
// -ffp-contract=off), so results are identical whichever runs. Define MEDSAM_NO_CLONES to build the baseline only.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && (!defined(__clang__) || __clang_major__ >= 14) && \
    !defined(MEDSAM_NO_CLONES)
#define MEDSAM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MEDSAM_CLONES
#endif
