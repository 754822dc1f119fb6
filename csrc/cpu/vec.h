// Eight-lane float vectors (GCC/Clang vector extensions) for the register-blocked softmax loops
// of blocks.inc: compiled into ymm instructions in the AVX2 variant and into pairs of SSE
// instructions in the baseline one. Always inlined, no ABI-visible vector arguments.
#pragma once

#include <cstdint>

#include "simd.h"

namespace siteflow {
namespace cpu {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

SF_INLINE v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

SF_INLINE v8i load8i(const int32_t* p) {
  v8i v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

SF_INLINE void store8(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof v); }

SF_INLINE v8f splat(float value) { return v8f{} + value; }

// exp_approx (simd.h) on eight lanes: the same operations, so the same results.
SF_INLINE v8f exp8(v8f x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const float magic = 12582912.0f;
  const v8f t = x * 1.44269504088896341f + magic;
  const v8f n = t - magic;
  const v8i ni = reinterpret_cast<v8i>(t) - reinterpret_cast<v8i>(splat(magic));
  v8f r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * reinterpret_cast<v8f>((ni + 127) << 23);
}

}  // namespace
}  // namespace cpu
}  // namespace siteflow
