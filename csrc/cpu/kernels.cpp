// CPU kernels of siteflow._C: the fused soft Dice loss (forward sums and backward) and the
// confusion counts.
//
// Work is split into tasks of one block of pixels of one sample, so that the C logits of a
// block stay in L1/L2 while the block is processed class by class in loops that the compiler
// vectorises; tasks run in parallel with at::parallel_for, each writing its own partial sums,
// which are added up afterwards in a fixed order (the results do not depend on the number of
// threads). The block loops are compiled twice on x86-64, for AVX2+FMA and for the baseline,
// and the version is picked at run time, so the library runs on any x86-64 CPU.
//
// float32, float16 and bfloat16 inputs are computed in float32 with a polynomial exp (about
// 1 ulp, vectorisable); float64 inputs in float64 with std::exp.

#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#define SF_INLINE inline __attribute__((always_inline))

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define SF_X86 1
#define SF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SF_X86 0
#endif

namespace siteflow {
namespace cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// Scalar conversions and exp, written branch-free so that loops using them vectorise.

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

// exp(x) in float32 (Cephes expf: range reduction by ln 2 and a degree-6 polynomial; about
// 1 ulp). x is clamped to [-87, 88]: exp(-87) = 1.6e-38 stands for anything smaller, which
// changes no softmax or sigmoid by more than that. NaN stays NaN.
SF_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
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
template <class In>
SF_INLINE void block_rows(const typename In::Raw* x, int64_t C, int64_t S, int64_t len, int64_t stride,
                          typename In::T* buf, const typename In::T** rows) {
  for (int64_t c = 0; c < C; ++c) {
    if constexpr (In::kDirect) {
      rows[c] = x + c * S;
    } else {
      const typename In::Raw* __restrict src = x + c * S;
      typename In::T* __restrict dst = buf + c * stride;
      for (int64_t s = 0; s < len; ++s) dst[s] = In::load(src[s]);
      rows[c] = dst;
    }
  }
}

// The class of each label of a block, -1 where ignored or invalid; returns kBadLabel if any is invalid.
template <class Lab>
SF_INLINE int load_labels(const Lab* __restrict y, int64_t len, const LabelSpec& spec, int32_t* __restrict lab) {
  const uint64_t classes = static_cast<uint64_t>(spec.num_classes);
  const int64_t ignore = spec.ignore_index;
  const bool has_ignore = spec.has_ignore;
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t s = 0; s < len; ++s) {
    const int64_t v = static_cast<int64_t>(y[s]);
    const bool ignored = has_ignore && v == ignore;
    const bool in_range = static_cast<uint64_t>(v) < classes;
    lab[s] = (in_range && !ignored) ? static_cast<int32_t>(v) : -1;
    bad |= (!in_range && !ignored) ? 1 : 0;
  }
  return bad ? kBadLabel : 0;
}

// An integer prediction of a block, -1 where invalid; returns kBadPrediction if any is invalid.
template <class Pred>
SF_INLINE int load_prediction(const Pred* __restrict p, int64_t len, int64_t num_classes, int32_t* __restrict pred) {
  const uint64_t classes = static_cast<uint64_t>(num_classes);
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t s = 0; s < len; ++s) {
    const int64_t v = static_cast<int64_t>(p[s]);
    const bool in_range = static_cast<uint64_t>(v) < classes;
    pred[s] = in_range ? static_cast<int32_t>(v) : -1;
    bad |= in_range ? 0 : 1;
  }
  return bad ? kBadPrediction : 0;
}

// ---------------------------------------------------------------------------------------------
// Block computations.

// e[c][s] = exp(x[c][s] - max_c x[c][s]) and w[s] = 1 / sum_c e[c][s] for counted pixels, 0 otherwise:
// the probabilities are e[c][s] * w[s].
template <class T>
SF_INLINE void softmax_block(const T* const* rows, int64_t C, int64_t len, int64_t stride, const int32_t* __restrict lab,
                             T* __restrict e, T* __restrict m, T* __restrict w) {
  {
    const T* __restrict x0 = rows[0];
    for (int64_t s = 0; s < len; ++s) m[s] = x0[s];
  }
  for (int64_t c = 1; c < C; ++c) {
    const T* __restrict xc = rows[c];
    for (int64_t s = 0; s < len; ++s) m[s] = xc[s] > m[s] ? xc[s] : m[s];
  }
  for (int64_t s = 0; s < len; ++s) w[s] = T(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict xc = rows[c];
    T* __restrict ec = e + c * stride;
    for (int64_t s = 0; s < len; ++s) {
      const T v = exp_approx(xc[s] - m[s]);
      ec[s] = v;
      w[s] += v;
    }
  }
  for (int64_t s = 0; s < len; ++s) w[s] = lab[s] >= 0 ? T(1) / w[s] : T(0);
}

template <class T>
SF_INLINE void softmax_sums_block(const T* const* rows, int64_t C, int64_t len, int64_t stride,
                                  const int32_t* __restrict lab, T* e, T* m, T* w, double* acc) {
  softmax_block(rows, C, len, stride, lab, e, m, w);
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict ec = e + c * stride;
    const T* __restrict wr = w;
    const int32_t cls = static_cast<int32_t>(c);
    T I = 0, P = 0, Y = 0;
#pragma omp simd reduction(+ : I, P, Y)
    for (int64_t s = 0; s < len; ++s) {
      const T p = ec[s] * wr[s];
      const bool hit = lab[s] == cls;
      P += p;
      I += hit ? p : T(0);
      Y += hit ? T(1) : T(0);
    }
    acc[c] = I;
    acc[C + c] = P;
    acc[2 * C + c] = Y;
  }
}

// Sigmoid of x = 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise, with e = exp(-|x|).
template <class T>
SF_INLINE void sigmoid_sums_block(const T* __restrict x, int64_t len, const int32_t* __restrict lab, double* acc) {
  T I = 0, P = 0, Y = 0;
#pragma omp simd reduction(+ : I, P, Y)
  for (int64_t s = 0; s < len; ++s) {
    const T v = x[s];
    const T e = exp_approx(-std::fabs(v));
    const T d = T(1) / (T(1) + e);
    const T p = v >= T(0) ? d : e * d;
    const bool hit = lab[s] == 1;
    P += lab[s] >= 0 ? p : T(0);
    I += hit ? p : T(0);
    Y += hit ? T(1) : T(0);
  }
  acc[0] = I;
  acc[1] = P;
  acc[2] = Y;
}

// dz_k = p_k (g_k - sum_c p_c g_c) with g_c = a_c + b_c [y == c], 0 at uncounted pixels.
template <class In>
SF_INLINE void softmax_backward_block(const typename In::T* const* rows, int64_t C, int64_t S, int64_t len,
                                      int64_t stride, const int32_t* __restrict lab, const typename In::T* a,
                                      const typename In::T* b, typename In::T* e, typename In::T* m,
                                      typename In::T* w, typename In::T* __restrict t, typename In::Raw* out) {
  using T = typename In::T;
  softmax_block(rows, C, len, stride, lab, e, m, w);
  for (int64_t s = 0; s < len; ++s) t[s] = T(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict ec = e + c * stride;
    const T* __restrict wr = w;
    const T ac = a[c], bc = b[c];
    const int32_t cls = static_cast<int32_t>(c);
    for (int64_t s = 0; s < len; ++s) t[s] += ec[s] * wr[s] * (ac + (lab[s] == cls ? bc : T(0)));
  }
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict ec = e + c * stride;
    const T* __restrict wr = w;
    const T ac = a[c], bc = b[c];
    const int32_t cls = static_cast<int32_t>(c);
    typename In::Raw* __restrict oc = out + c * S;
    for (int64_t s = 0; s < len; ++s) {
      const T p = ec[s] * wr[s];
      oc[s] = In::store(p * (ac + (lab[s] == cls ? bc : T(0)) - t[s]));
    }
  }
}

// dz = p (1 - p) (a + b [y == 1]) = e / (1 + e)^2 (a + b [y == 1]), 0 at uncounted pixels.
template <class In>
SF_INLINE void sigmoid_backward_block(const typename In::T* __restrict x, int64_t len, const int32_t* __restrict lab,
                                      typename In::T a, typename In::T b, typename In::Raw* __restrict out) {
  using T = typename In::T;
  for (int64_t s = 0; s < len; ++s) {
    const T e = exp_approx(-std::fabs(x[s]));
    const T d = T(1) / (T(1) + e);
    const T g = e * d * d * (a + (lab[s] == 1 ? b : T(0)));
    out[s] = In::store(lab[s] >= 0 ? g : T(0));
  }
}

// The first maximum over C (a NaN counts as the maximum, as in torch.max); for C == 1, logit > 0.
template <class T>
SF_INLINE void argmax_block(const T* const* rows, int64_t C, int64_t len, int32_t* __restrict pred,
                            T* __restrict best) {
  if (C == 1) {
    const T* __restrict x0 = rows[0];
    for (int64_t s = 0; s < len; ++s) pred[s] = x0[s] > T(0) ? 1 : 0;
    return;
  }
  {
    const T* __restrict x0 = rows[0];
    for (int64_t s = 0; s < len; ++s) {
      best[s] = x0[s];
      pred[s] = 0;
    }
  }
  for (int64_t c = 1; c < C; ++c) {
    const T* __restrict xc = rows[c];
    const int32_t cls = static_cast<int32_t>(c);
    for (int64_t s = 0; s < len; ++s) {
      const T v = xc[s];
      const T current = best[s];
      // v > current, or v is NaN while current is not: a NaN, once taken, is kept.
      const bool take = (current == current) & !(v <= current);
      best[s] = take ? v : current;
      pred[s] = take ? cls : pred[s];
    }
  }
}

// acc (3, K): per class the true positives, the predicted and the true pixels among counted ones.
SF_INLINE void count_block(const int32_t* __restrict pred, const int32_t* __restrict lab, int64_t K, int64_t len,
                           int64_t* acc) {
  for (int64_t c = 0; c < K; ++c) {
    const int32_t cls = static_cast<int32_t>(c);
    int32_t tp = 0, np = 0, nt = 0;
#pragma omp simd reduction(+ : tp, np, nt)
    for (int64_t s = 0; s < len; ++s) {
      const bool is_pred = pred[s] == cls;
      const bool is_true = lab[s] == cls;
      tp += (is_pred & is_true) ? 1 : 0;
      np += (is_pred & (lab[s] >= 0)) ? 1 : 0;
      nt += is_true ? 1 : 0;
    }
    acc[c] = tp;
    acc[K + c] = np;
    acc[2 * K + c] = nt;
  }
}

// ---------------------------------------------------------------------------------------------
// Task ranges: a task is block (task % blocks) of sample (task / blocks).

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

template <class In, class Lab>
SF_INLINE int dice_sums_range(const Problem& p, int64_t begin, int64_t end, double* partial) {
  using T = typename In::T;
  using Raw = typename In::Raw;
  const int64_t C = p.C, S = p.S, B = p.block;
  std::vector<T> buffer((In::kDirect ? 0 : C * B) + C * B + 2 * B);
  T* xbuf = buffer.data();
  T* e = xbuf + (In::kDirect ? 0 : C * B);
  T* m = e + C * B;
  T* w = m + B;
  std::vector<int32_t> lab(B);
  std::vector<const T*> rows(C);
  int status = 0;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / p.blocks, s0 = (task % p.blocks) * B;
    const int64_t len = std::min(B, S - s0);
    status |= load_labels(static_cast<const Lab*>(p.y) + n * S + s0, len, p.spec, lab.data());
    block_rows<In>(static_cast<const Raw*>(p.x) + n * C * S + s0, C, S, len, B, xbuf, rows.data());
    double* acc = partial + task * 3 * C;
    if (C == 1) {
      sigmoid_sums_block<T>(rows[0], len, lab.data(), acc);
    } else {
      softmax_sums_block<T>(rows.data(), C, len, B, lab.data(), e, m, w, acc);
    }
  }
  return status;
}

template <class In, class Lab>
SF_INLINE int dice_backward_range(const Problem& p, int64_t begin, int64_t end, double*) {
  using T = typename In::T;
  using Raw = typename In::Raw;
  const int64_t C = p.C, S = p.S, B = p.block;
  std::vector<T> buffer((In::kDirect ? 0 : C * B) + C * B + 3 * B + 2 * C);
  T* xbuf = buffer.data();
  T* e = xbuf + (In::kDirect ? 0 : C * B);
  T* m = e + C * B;
  T* w = m + B;
  T* t = w + B;
  T* a = t + B;
  T* b = a + C;
  std::vector<int32_t> lab(B);
  std::vector<const T*> rows(C);
  int64_t coef_sample = -1;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / p.blocks, s0 = (task % p.blocks) * B;
    const int64_t len = std::min(B, S - s0);
    if (n != coef_sample) {
      for (int64_t c = 0; c < C; ++c) {
        a[c] = static_cast<T>(p.coef[(n * 2 + 0) * C + c] * p.scale);
        b[c] = static_cast<T>(p.coef[(n * 2 + 1) * C + c] * p.scale);
      }
      coef_sample = n;
    }
    load_labels(static_cast<const Lab*>(p.y) + n * S + s0, len, p.spec, lab.data());
    block_rows<In>(static_cast<const Raw*>(p.x) + n * C * S + s0, C, S, len, B, xbuf, rows.data());
    Raw* out = static_cast<Raw*>(p.out) + n * C * S + s0;
    if (C == 1) {
      sigmoid_backward_block<In>(rows[0], len, lab.data(), a[0], b[0], out);
    } else {
      softmax_backward_block<In>(rows.data(), C, S, len, B, lab.data(), a, b, e, m, w, t, out);
    }
  }
  return 0;
}

template <class In, class Lab>
SF_INLINE int confusion_logits_range(const Problem& p, int64_t begin, int64_t end, int64_t* partial) {
  using T = typename In::T;
  using Raw = typename In::Raw;
  const int64_t C = p.C, S = p.S, B = p.block, K = p.num_classes;
  std::vector<T> buffer((In::kDirect ? 0 : C * B) + B);
  T* xbuf = buffer.data();
  T* best = xbuf + (In::kDirect ? 0 : C * B);
  std::vector<int32_t> lab(B), pred(B);
  std::vector<const T*> rows(C);
  int status = 0;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / p.blocks, s0 = (task % p.blocks) * B;
    const int64_t len = std::min(B, S - s0);
    status |= load_labels(static_cast<const Lab*>(p.y) + n * S + s0, len, p.spec, lab.data());
    block_rows<In>(static_cast<const Raw*>(p.x) + n * C * S + s0, C, S, len, B, xbuf, rows.data());
    argmax_block<T>(rows.data(), C, len, pred.data(), best);
    count_block(pred.data(), lab.data(), K, len, partial + task * 3 * K);
  }
  return status;
}

template <class Pred, class Lab>
SF_INLINE int confusion_pred_range(const Problem& p, int64_t begin, int64_t end, int64_t* partial) {
  const int64_t S = p.S, B = p.block, K = p.num_classes;
  std::vector<int32_t> lab(B), pred(B);
  int status = 0;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / p.blocks, s0 = (task % p.blocks) * B;
    const int64_t len = std::min(B, S - s0);
    status |= load_labels(static_cast<const Lab*>(p.y) + n * S + s0, len, p.spec, lab.data());
    status |= load_prediction(static_cast<const Pred*>(p.x) + n * S + s0, len, K, pred.data());
    count_block(pred.data(), lab.data(), K, len, partial + task * 3 * K);
  }
  return status;
}

// One function per (range kernel, instruction set): the body is inlined into each, so that each
// is vectorised for its target.
template <class Acc>
using RangeFn = int (*)(const Problem&, int64_t, int64_t, Acc*);

#define SF_VARIANTS(NAME, ACC)                                                                    \
  template <class A, class B>                                                                     \
  int NAME##_default(const Problem& p, int64_t begin, int64_t end, ACC* partial) {               \
    return NAME<A, B>(p, begin, end, partial);                                                    \
  }                                                                                               \
  SF_AVX2_VARIANT(NAME, ACC)                                                                      \
  template <class A, class B>                                                                     \
  RangeFn<ACC> pick_##NAME() {                                                                    \
    return use_avx2() ? SF_AVX2_POINTER(NAME) : NAME##_default<A, B>;                             \
  }

std::atomic<int> isa_choice{-1};  // -1: not decided, 0: default, 1: avx2

bool cpu_has_avx2() {
#if SF_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool use_avx2() {
  int choice = isa_choice.load(std::memory_order_relaxed);
  if (choice < 0) {
    const char* env = std::getenv("SITEFLOW_CPU_ISA");
    const bool forced_default = env != nullptr && std::strcmp(env, "default") == 0;
    choice = (!forced_default && cpu_has_avx2()) ? 1 : 0;
    isa_choice.store(choice, std::memory_order_relaxed);
  }
  return choice == 1;
}

#if SF_X86
#define SF_AVX2_VARIANT(NAME, ACC)                                                                \
  template <class A, class B>                                                                     \
  SF_TARGET_AVX2 int NAME##_avx2(const Problem& p, int64_t begin, int64_t end, ACC* partial) {   \
    return NAME<A, B>(p, begin, end, partial);                                                    \
  }
#define SF_AVX2_POINTER(NAME) NAME##_avx2<A, B>
#else
#define SF_AVX2_VARIANT(NAME, ACC)
#define SF_AVX2_POINTER(NAME) NAME##_default<A, B>
#endif

SF_VARIANTS(dice_sums_range, double)
SF_VARIANTS(dice_backward_range, double)
SF_VARIANTS(confusion_logits_range, int64_t)
SF_VARIANTS(confusion_pred_range, int64_t)

// ---------------------------------------------------------------------------------------------
// Drivers.

std::atomic<int64_t> block_override{0};

int64_t block_pixels(int64_t C) {
  const int64_t forced = block_override.load(std::memory_order_relaxed);
  if (forced > 0) return forced;
  // About 16 KiB of float32 logits per block; a multiple of 64 pixels.
  const int64_t pixels = (4096 / std::max<int64_t>(C, 1)) / 64 * 64;
  return std::min<int64_t>(std::max<int64_t>(pixels, 512), 4096);
}

// Runs fn(begin, end) over the tasks in parallel; returns the OR of the statuses.
template <class Fn>
int run_tasks(int64_t tasks, int64_t work_per_task, const Fn& fn) {
  if (tasks <= 0) return 0;
  std::atomic<int> status{0};
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_task, 1));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    const int s = fn(begin, end);
    if (s) status.fetch_or(s, std::memory_order_relaxed);
  });
  return status.load();
}

template <template <class, class> class Dispatch, class... Args>
auto dispatch_scalar_index(ScalarKind xk, IndexKind yk, Args&&... args) {
  switch (xk) {
    case ScalarKind::Float32:
      return yk == IndexKind::UInt8 ? Dispatch<F32, uint8_t>::run(args...) : Dispatch<F32, int64_t>::run(args...);
    case ScalarKind::Float64:
      return yk == IndexKind::UInt8 ? Dispatch<F64, uint8_t>::run(args...) : Dispatch<F64, int64_t>::run(args...);
    case ScalarKind::Float16:
      return yk == IndexKind::UInt8 ? Dispatch<F16, uint8_t>::run(args...) : Dispatch<F16, int64_t>::run(args...);
    case ScalarKind::BFloat16:
    default:
      return yk == IndexKind::UInt8 ? Dispatch<BF16, uint8_t>::run(args...) : Dispatch<BF16, int64_t>::run(args...);
  }
}

template <class In, class Lab>
struct DiceSums {
  static int run(const Problem& p, double* sums) {
    const int64_t K = 3 * p.C, tasks = p.N * p.blocks;
    std::vector<double> partial(static_cast<size_t>(tasks * K));
    const RangeFn<double> fn = pick_dice_sums_range<In, Lab>();
    const int status =
        run_tasks(tasks, p.block * p.C, [&](int64_t b, int64_t e) { return fn(p, b, e, partial.data()); });
    for (int64_t n = 0; n < p.N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        double total = 0.0;
        for (int64_t blk = 0; blk < p.blocks; ++blk) total += partial[(n * p.blocks + blk) * K + k];
        sums[n * K + k] = total;
      }
    }
    return status;
  }
};

template <class In, class Lab>
struct DiceBackward {
  static int run(const Problem& p) {
    const RangeFn<double> fn = pick_dice_backward_range<In, Lab>();
    return run_tasks(p.N * p.blocks, p.block * p.C, [&](int64_t b, int64_t e) { return fn(p, b, e, nullptr); });
  }
};

void finish_confusion(const Problem& p, const std::vector<int64_t>& partial, int64_t* tp, int64_t* fp, int64_t* fn) {
  const int64_t K = p.num_classes;
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t c = 0; c < K; ++c) {
      int64_t counts[3] = {0, 0, 0};
      for (int64_t blk = 0; blk < p.blocks; ++blk) {
        const int64_t* acc = partial.data() + (n * p.blocks + blk) * 3 * K;
        for (int r = 0; r < 3; ++r) counts[r] += acc[r * K + c];
      }
      tp[n * K + c] = counts[0];
      fp[n * K + c] = counts[1] - counts[0];
      fn[n * K + c] = counts[2] - counts[0];
    }
  }
}

template <class In, class Lab>
struct ConfusionLogits {
  static int run(const Problem& p, int64_t* tp, int64_t* fp, int64_t* fn) {
    const int64_t tasks = p.N * p.blocks;
    std::vector<int64_t> partial(static_cast<size_t>(tasks * 3 * p.num_classes));
    const RangeFn<int64_t> range = pick_confusion_logits_range<In, Lab>();
    const int status = run_tasks(tasks, p.block * (p.C + p.num_classes),
                                 [&](int64_t b, int64_t e) { return range(p, b, e, partial.data()); });
    finish_confusion(p, partial, tp, fp, fn);
    return status;
  }
};

Problem make_problem(const void* x, const void* y, int64_t N, int64_t C, int64_t S, const LabelSpec& spec) {
  Problem p{};
  p.x = x;
  p.y = y;
  p.N = N;
  p.C = C;
  p.S = S;
  p.block = block_pixels(C);
  p.blocks = S > 0 ? (S + p.block - 1) / p.block : 0;
  p.spec = spec;
  return p;
}

}  // namespace

int dice_sums(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
              const LabelSpec& spec, double* sums) {
  Problem p = make_problem(x, y, N, C, S, spec);
  std::fill(sums, sums + N * 3 * C, 0.0);
  return dispatch_scalar_index<DiceSums>(xk, yk, p, sums);
}

void dice_backward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                   const LabelSpec& spec, const double* coef, double scale, void* grad) {
  Problem p = make_problem(x, y, N, C, S, spec);
  p.coef = coef;
  p.scale = scale;
  p.out = grad;
  dispatch_scalar_index<DiceBackward>(xk, yk, p);
}

int confusion_logits(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                     const LabelSpec& spec, int64_t num_classes, int64_t* tp, int64_t* fp, int64_t* fn) {
  Problem p = make_problem(x, y, N, C, S, spec);
  p.num_classes = num_classes;
  return dispatch_scalar_index<ConfusionLogits>(xk, yk, p, tp, fp, fn);
}

int confusion_pred(IndexKind pk, const void* pred, IndexKind yk, const void* y, int64_t N, int64_t S,
                   const LabelSpec& spec, int64_t num_classes, int64_t* tp, int64_t* fp, int64_t* fn) {
  Problem p = make_problem(pred, y, N, 1, S, spec);
  p.num_classes = num_classes;
  const int64_t tasks = p.N * p.blocks;
  std::vector<int64_t> partial(static_cast<size_t>(tasks * 3 * num_classes));
  RangeFn<int64_t> range;
  if (pk == IndexKind::UInt8) {
    range = yk == IndexKind::UInt8 ? pick_confusion_pred_range<uint8_t, uint8_t>()
                                   : pick_confusion_pred_range<uint8_t, int64_t>();
  } else {
    range = yk == IndexKind::UInt8 ? pick_confusion_pred_range<int64_t, uint8_t>()
                                   : pick_confusion_pred_range<int64_t, int64_t>();
  }
  const int status =
      run_tasks(tasks, p.block * num_classes, [&](int64_t b, int64_t e) { return range(p, b, e, partial.data()); });
  finish_confusion(p, partial, tp, fp, fn);
  return status;
}

const char* cpu_isa() { return use_avx2() ? "avx2" : "default"; }

bool set_cpu_isa(const char* name) {
  if (std::strcmp(name, "default") == 0) {
    isa_choice.store(0);
  } else if (std::strcmp(name, "auto") == 0) {
    isa_choice.store(cpu_has_avx2() ? 1 : 0);
  } else {
    return false;
  }
  return true;
}

void set_block_pixels(int64_t pixels) { block_override.store(std::max<int64_t>(pixels, 0)); }

}  // namespace cpu
}  // namespace siteflow
