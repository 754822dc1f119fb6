// Scalar helpers of the CPU kernels: float conversions, a vectorisable exp and the input types.
// Written branch-free and always inlined, so that the block loops using them vectorise for the
// instruction set of the function they are inlined into (see blocks.inc).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common.h"

#define SF_INLINE inline __attribute__((always_inline))

namespace siteflow {
namespace cpu {
namespace {

SF_INLINE float bits_to_float(uint32_t w) {
  float f;
  __builtin_memcpy(&f, &w, sizeof f);
  return f;
}

SF_INLINE uint32_t float_to_bits(float f) {
  uint32_t w;
  __builtin_memcpy(&w, &f, sizeof w);
  return w;
}

// IEEE half to float, exact (M. Maratos' method, as in c10 and the FP16 library).
SF_INLINE float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_to_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? float_to_bits(denormalized) : float_to_bits(normalized);
  return bits_to_float(sign | magnitude);
}

// Float to IEEE half, rounding to nearest even (as c10::Half).
SF_INLINE uint16_t float_to_half(float f) {
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = float_to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

SF_INLINE float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// Float to bfloat16, rounding to nearest even, NaN to the quiet NaN 0x7FC0 (as c10::BFloat16).
SF_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t w = float_to_bits(f);
  const uint32_t rounded = (w + 0x7FFFu + ((w >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// exp(x) in float32 for x <= 0 (all the kernels need: logits minus their maximum, -|logit|):
// Cephes expf, range reduction by ln 2 and a degree-6 polynomial, about 1 ulp. x below -87 gives
// exp(-87) = 1.6e-38, which changes no softmax or sigmoid by more than that; -inf gives the same,
// NaN stays NaN. (No upper clamp: x > 88 would overflow the exponent.)
SF_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;  // round(x / ln 2)
  const int32_t ni = static_cast<int32_t>(float_to_bits(t) - float_to_bits(magic));
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * bits_to_float(static_cast<uint32_t>(ni + 127) << 23);
}

SF_INLINE double exp_approx(double x) { return std::exp(x); }

// ---------------------------------------------------------------------------------------------
// Input types: the stored type (Raw) and the compute type (T).

struct F32 {
  using Raw = float;
  using T = float;
  static constexpr bool kDirect = true;  // computed in place, no conversion buffer
  static SF_INLINE T load(Raw v) { return v; }
  static SF_INLINE Raw store(T v) { return v; }
};
struct F64 {
  using Raw = double;
  using T = double;
  static constexpr bool kDirect = true;
  static SF_INLINE T load(Raw v) { return v; }
  static SF_INLINE Raw store(T v) { return v; }
};
struct F16 {
  using Raw = uint16_t;
  using T = float;
  static constexpr bool kDirect = false;
  static SF_INLINE T load(Raw v) { return half_to_float(v); }
  static SF_INLINE Raw store(T v) { return float_to_half(v); }
};
struct BF16 {
  using Raw = uint16_t;
  using T = float;
  static constexpr bool kDirect = false;
  static SF_INLINE T load(Raw v) { return bf16_to_float(v); }
  static SF_INLINE Raw store(T v) { return float_to_bf16(v); }
};

// Rows of a block as compute-type pointers: the input itself, or its conversion into buf.
// A kernel call: tasks are block (task % blocks) of sample (task / blocks).
struct Problem {
  const void* x;  // logits (N, C, S) or prediction (N, S)
  const void* y;  // labels (N, S)
  int64_t N, C, S;
  int64_t block, blocks;  // pixels per block, blocks per sample
  LabelSpec spec;
  int64_t num_classes;  // confusion: classes counted
  const double* coef;   // backward: (N, 2, C)
  double scale;
  void* out;  // backward: gradient (N, C, S)
};

}  // namespace
}  // namespace cpu
}  // namespace siteflow
