// CUDA kernels of siteflow._C: the fused soft Dice loss (forward sums and backward) and the
// confusion counts. Plain CUDA C++ (no torch headers): `nvcc -c csrc/cuda/kernels.cu` compiles it.
//
// A thread block covers one tile of kTile pixels of one sample; each thread takes kItems pixels
// of the tile, kThreads apart (coalesced loads of every class row). Per-class sums are kept in
// registers for kChunk classes at a time (more classes: one more pass over the tile per chunk),
// reduced over the block with warp shuffles in a fixed order, and written per tile; a one-block
// kernel then adds the tiles up, again in a fixed order, so results are deterministic.
// float32, float16 and bfloat16 are computed in float32 (expf), float64 in float64.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels.h"

namespace siteflow {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kItems = 8;
constexpr int64_t kTile = static_cast<int64_t>(kThreads) * kItems;
constexpr int kChunk = 8;
constexpr int kFinalizeThreads = 1024;

template <class In>
struct Compute {
  using T = float;
};
template <>
struct Compute<double> {
  using T = double;
};

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load(const double* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(double* p, int64_t i, double v) { p[i] = v; }
__device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

__device__ __forceinline__ float exp_of(float v) { return expf(v); }
__device__ __forceinline__ double exp_of(double v) { return exp(v); }
__device__ __forceinline__ float abs_of(float v) { return fabsf(v); }
__device__ __forceinline__ double abs_of(double v) { return fabs(v); }

// Sums v over the thread block; thread 0 holds the totals afterwards. All threads must call it.
template <class V, int K>
__device__ __forceinline__ void block_sum(V (&v)[K], V (*smem)[K]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < K; ++j) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[j] += __shfl_down_sync(0xffffffffu, v[j], offset);
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < K; ++j) smem[warp][j] = v[j];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int j = 0; j < K; ++j) {
      v[j] = lane < kWarps ? smem[lane][j] : V(0);
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v[j] += __shfl_down_sync(0xffffffffu, v[j], offset);
    }
  }
  __syncthreads();  // smem is reused by the next call
}

// max over the C classes of pixel s, and e[j] = exp(x[c0 + j] - max) for the chunk starting at
// c0 (0 past C); returns the sum of exp over all classes (added in class order).
template <class In, class T>
__device__ __forceinline__ T softmax_pixel(const In* xn, int64_t C, int64_t S, int64_t s, int64_t c0, T& m,
                                           T (&e)[kChunk]) {
  m = load(xn, s);
  for (int64_t c = 1; c < C; ++c) {
    const T v = load(xn, c * S + s);
    m = v > m ? v : m;
  }
  T sum = T(0);
  for (int64_t c = 0; c < c0; ++c) sum += exp_of(load(xn, c * S + s) - m);
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    const int64_t c = c0 + j;
    e[j] = c < C ? exp_of(load(xn, c * S + s) - m) : T(0);
    sum += e[j];
  }
  for (int64_t c = c0 + kChunk; c < C; ++c) sum += exp_of(load(xn, c * S + s) - m);
  return sum;
}

// Per-tile sums I, P, Y: partial (N * tiles, 3, C).
template <class In, class Lab>
__global__ void __launch_bounds__(kThreads)
    dice_sums_kernel(const In* __restrict__ x, const Lab* __restrict__ y, int64_t C, int64_t S, int64_t tiles,
                     LabelSpec spec, double* __restrict__ partial, int* __restrict__ status) {
  using T = typename Compute<In>::T;
  __shared__ T smem[kWarps][3 * kChunk];
  const int64_t block = blockIdx.x;
  const int64_t n = block / tiles;
  const int64_t s_begin = (block % tiles) * kTile;
  const In* xn = x + n * C * S;
  const Lab* yn = y + n * S;
  bool bad = false;
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    T acc[3 * kChunk];  // I of the chunk's classes, then P, then Y
#pragma unroll
    for (int j = 0; j < 3 * kChunk; ++j) acc[j] = T(0);
    for (int k = 0; k < kItems; ++k) {
      const int64_t s = s_begin + static_cast<int64_t>(k) * kThreads + threadIdx.x;
      if (s >= S) break;
      bool invalid;
      const int32_t label = label_class(static_cast<int64_t>(yn[s]), spec, &invalid);
      bad |= invalid;
      if (label < 0) continue;
      if (C == 1) {  // sigmoid, foreground class 1
        const T v = load(xn, s);
        const T e = exp_of(-abs_of(v));
        const T d = T(1) / (T(1) + e);
        const T p = v >= T(0) ? d : e * d;
        acc[kChunk] += p;
        if (label == 1) {
          acc[0] += p;
          acc[2 * kChunk] += T(1);
        }
        continue;
      }
      T m, e[kChunk];
      const T inv = T(1) / softmax_pixel<In, T>(xn, C, S, s, c0, m, e);
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const T p = e[j] * inv;
        acc[kChunk + j] += p;
        if (label == c0 + j) {
          acc[j] += p;
          acc[2 * kChunk + j] += T(1);
        }
      }
    }
    block_sum<T, 3 * kChunk>(acc, smem);
    if (threadIdx.x == 0) {
      for (int j = 0; j < kChunk && c0 + j < C; ++j) {
        for (int r = 0; r < 3; ++r) partial[(block * 3 + r) * C + c0 + j] = static_cast<double>(acc[r * kChunk + j]);
      }
    }
  }
  if (bad) atomicOr(status, kBadLabel);
}

// One block: sums (N, 3, C) from the tiles (one warp per value, lanes over tiles), then the
// loss and coefficients.
__global__ void __launch_bounds__(kFinalizeThreads)
    dice_finalize_kernel(const double* __restrict__ partial, int64_t N, int64_t C, int64_t tiles, bool do_bg,
                         bool batch_dice, double smooth, double* __restrict__ sums, double* __restrict__ coef,
                         double* __restrict__ loss) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t K = 3 * C;
  for (int64_t i = warp; i < N * K; i += warps) {
    const int64_t n = i / K, k = i % K;
    double acc = 0.0;
    for (int64_t t = lane; t < tiles; t += 32) acc += partial[(n * tiles + t) * K + k];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) sums[i] = acc;
  }
  __syncthreads();
  if (threadIdx.x == 0) dice_finalize(sums, N, C, do_bg, batch_dice, smooth, coef, loss);
}

// dz_k = p_k (g_k - sum_c p_c g_c), g_c = dL/dP_c + dL/dI_c [y == c]; 0 at uncounted pixels.
template <class In, class Lab>
__global__ void __launch_bounds__(kThreads)
    dice_backward_kernel(const In* __restrict__ x, const Lab* __restrict__ y, int64_t C, int64_t S, int64_t tiles,
                         LabelSpec spec, const double* __restrict__ coef, In* __restrict__ grad) {
  using T = typename Compute<In>::T;
  const int64_t block = blockIdx.x;
  const int64_t n = block / tiles;
  const int64_t s_begin = (block % tiles) * kTile;
  const In* xn = x + n * C * S;
  In* gn = grad + n * C * S;
  const double* a = coef + n * 2 * C;  // dL/dP
  const double* b = a + C;             // dL/dI
  for (int k = 0; k < kItems; ++k) {
    const int64_t s = s_begin + static_cast<int64_t>(k) * kThreads + threadIdx.x;
    if (s >= S) break;
    bool invalid;
    const int32_t label = label_class(static_cast<int64_t>(y[n * S + s]), spec, &invalid);
    if (C == 1) {
      const T v = load(xn, s);
      const T e = exp_of(-abs_of(v));
      const T d = T(1) / (T(1) + e);
      const T g = e * d * d * static_cast<T>(a[0] + (label == 1 ? b[0] : 0.0));
      store(gn, s, label >= 0 ? g : T(0));
      continue;
    }
    if (label < 0) {
      for (int64_t c = 0; c < C; ++c) store(gn, c * S + s, T(0));
      continue;
    }
    T m, e[kChunk];
    const T inv = T(1) / softmax_pixel<In, T>(xn, C, S, s, 0, m, e);
    T t = T(0);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (j < C) t += e[j] * inv * static_cast<T>(a[j] + (label == j ? b[j] : 0.0));
    }
    for (int64_t c = kChunk; c < C; ++c) {
      const T p = exp_of(load(xn, c * S + s) - m) * inv;
      t += p * static_cast<T>(a[c] + (label == c ? b[c] : 0.0));
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (j < C) {
        const T p = e[j] * inv;
        store(gn, j * S + s, p * (static_cast<T>(a[j] + (label == j ? b[j] : 0.0)) - t));
      }
    }
    for (int64_t c = kChunk; c < C; ++c) {
      const T p = exp_of(load(xn, c * S + s) - m) * inv;
      store(gn, c * S + s, p * (static_cast<T>(a[c] + (label == c ? b[c] : 0.0)) - t));
    }
  }
}

// Per-tile counts: true positives, predicted and true pixels among counted ones, partial
// (N * tiles, 3, K). kPred: x is an integer prediction (N, S); else logits (N, C, S).
template <class In, class Lab, bool kPred>
__global__ void __launch_bounds__(kThreads)
    confusion_kernel(const In* __restrict__ x, const Lab* __restrict__ y, int64_t C, int64_t K, int64_t S,
                     int64_t tiles, LabelSpec spec, int32_t* __restrict__ partial, int* __restrict__ status) {
  __shared__ int32_t smem[kWarps][3 * kChunk];
  const int64_t block = blockIdx.x;
  const int64_t n = block / tiles;
  const int64_t s_begin = (block % tiles) * kTile;
  const Lab* yn = y + n * S;
  int bad = 0;
  for (int64_t c0 = 0; c0 < K; c0 += kChunk) {
    int32_t acc[3 * kChunk];
#pragma unroll
    for (int j = 0; j < 3 * kChunk; ++j) acc[j] = 0;
    for (int k = 0; k < kItems; ++k) {
      const int64_t s = s_begin + static_cast<int64_t>(k) * kThreads + threadIdx.x;
      if (s >= S) break;
      bool invalid;
      const int32_t label = label_class(static_cast<int64_t>(yn[s]), spec, &invalid);
      if (invalid) bad |= kBadLabel;
      int64_t pred;
      if constexpr (kPred) {
        const int64_t v = static_cast<int64_t>(x[n * S + s]);
        const bool in_range = static_cast<uint64_t>(v) < static_cast<uint64_t>(K);
        pred = in_range ? v : -1;
        if (!in_range) bad |= kBadPrediction;
      } else {
        using T = typename Compute<In>::T;
        const In* xn = x + n * C * S;
        if (C == 1) {
          pred = load(xn, s) > T(0) ? 1 : 0;
        } else {
          T best = load(xn, s);
          pred = 0;
          for (int64_t c = 1; c < C; ++c) {
            const T v = load(xn, c * S + s);
            if (best == best && !(v <= best)) {  // greater, or a NaN (kept once taken): as torch.max
              best = v;
              pred = c;
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const int64_t c = c0 + j;
        acc[j] += (pred == c && label == c) ? 1 : 0;
        acc[kChunk + j] += (pred == c && label >= 0) ? 1 : 0;
        acc[2 * kChunk + j] += label == c ? 1 : 0;
      }
    }
    block_sum<int32_t, 3 * kChunk>(acc, smem);
    if (threadIdx.x == 0) {
      for (int j = 0; j < kChunk && c0 + j < K; ++j) {
        for (int r = 0; r < 3; ++r) partial[(block * 3 + r) * K + c0 + j] = acc[r * kChunk + j];
      }
    }
  }
  if (bad) atomicOr(status, bad);
}

// One block: tp, fp, fn (N, K) int64 from the tiles' counts.
__global__ void __launch_bounds__(kFinalizeThreads)
    confusion_finalize_kernel(const int32_t* __restrict__ partial, int64_t N, int64_t K, int64_t tiles,
                              int64_t* __restrict__ tp, int64_t* __restrict__ fp, int64_t* __restrict__ fn) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t i = warp; i < N * 3 * K; i += warps) {
    const int64_t n = i / (3 * K), r = (i / K) % 3, c = i % K;
    long long acc = 0;
    for (int64_t t = lane; t < tiles; t += 32) acc += partial[((n * tiles + t) * 3 + r) * K + c];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) (r == 0 ? tp : r == 1 ? fp : fn)[n * K + c] = acc;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < N * K; i += blockDim.x) {
    fp[i] -= tp[i];  // predicted - true positives
    fn[i] -= tp[i];  // true - true positives
  }
}

// Calls f(static_cast<const In*>(nullptr)) with In the C++ type of a ScalarKind.
template <class F>
cudaError_t with_scalar(ScalarKind kind, F&& f) {
  switch (kind) {
    case ScalarKind::Float32:
      return f(static_cast<const float*>(nullptr));
    case ScalarKind::Float64:
      return f(static_cast<const double*>(nullptr));
    case ScalarKind::Float16:
      return f(static_cast<const __half*>(nullptr));
    case ScalarKind::BFloat16:
      return f(static_cast<const __nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

template <class F>
cudaError_t with_index(IndexKind kind, F&& f) {
  return kind == IndexKind::UInt8 ? f(static_cast<const uint8_t*>(nullptr)) : f(static_cast<const int64_t*>(nullptr));
}

template <class P>
using Pointee = typename std::remove_const<typename std::remove_pointer<P>::type>::type;

}  // namespace

int64_t tile_pixels() { return kTile; }

int64_t tiles_per_sample(int64_t S) { return (S + kTile - 1) / kTile; }

cudaError_t dice_forward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                         const LabelSpec& spec, bool do_bg, bool batch_dice, double smooth, double* partial,
                         double* sums, double* coef, double* loss, int* status, cudaStream_t stream) {
  const int64_t tiles = tiles_per_sample(S);
  if (N * tiles > 0) {
    const cudaError_t err = with_scalar(xk, [&](auto in_tag) {
      using In = Pointee<decltype(in_tag)>;
      return with_index(yk, [&](auto lab_tag) {
        using Lab = Pointee<decltype(lab_tag)>;
        dice_sums_kernel<In, Lab><<<static_cast<unsigned>(N * tiles), kThreads, 0, stream>>>(
            static_cast<const In*>(x), static_cast<const Lab*>(y), C, S, tiles, spec, partial, status);
        return cudaGetLastError();
      });
    });
    if (err != cudaSuccess) return err;
  }
  dice_finalize_kernel<<<1, kFinalizeThreads, 0, stream>>>(partial, N, C, tiles, do_bg, batch_dice, smooth, sums, coef,
                                                           loss);
  return cudaGetLastError();
}

cudaError_t dice_backward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                          const LabelSpec& spec, const double* coef, void* grad, cudaStream_t stream) {
  const int64_t tiles = tiles_per_sample(S);
  if (N * tiles == 0) return cudaSuccess;
  return with_scalar(xk, [&](auto in_tag) {
    using In = Pointee<decltype(in_tag)>;
    return with_index(yk, [&](auto lab_tag) {
      using Lab = Pointee<decltype(lab_tag)>;
      dice_backward_kernel<In, Lab><<<static_cast<unsigned>(N * tiles), kThreads, 0, stream>>>(
          static_cast<const In*>(x), static_cast<const Lab*>(y), C, S, tiles, spec, coef, static_cast<In*>(grad));
      return cudaGetLastError();
    });
  });
}

cudaError_t confusion(bool x_is_pred, ScalarKind xk, IndexKind pk, const void* x, IndexKind yk, const void* y,
                      int64_t N, int64_t C, int64_t S, const LabelSpec& spec, int64_t num_classes, int32_t* partial,
                      int64_t* tp, int64_t* fp, int64_t* fn, int* status, cudaStream_t stream) {
  const int64_t tiles = tiles_per_sample(S);
  const unsigned grid = static_cast<unsigned>(N * tiles);
  if (grid > 0) {
    const cudaError_t err = with_index(yk, [&](auto lab_tag) {
      using Lab = Pointee<decltype(lab_tag)>;
      if (x_is_pred) {
        return with_index(pk, [&](auto pred_tag) {
          using Pred = Pointee<decltype(pred_tag)>;
          confusion_kernel<Pred, Lab, true><<<grid, kThreads, 0, stream>>>(
              static_cast<const Pred*>(x), static_cast<const Lab*>(y), 1, num_classes, S, tiles, spec, partial,
              status);
          return cudaGetLastError();
        });
      }
      return with_scalar(xk, [&](auto in_tag) {
        using In = Pointee<decltype(in_tag)>;
        confusion_kernel<In, Lab, false><<<grid, kThreads, 0, stream>>>(static_cast<const In*>(x),
                                                                        static_cast<const Lab*>(y), C, num_classes,
                                                                        S, tiles, spec, partial, status);
        return cudaGetLastError();
      });
    });
    if (err != cudaSuccess) return err;
  }
  confusion_finalize_kernel<<<1, kFinalizeThreads, 0, stream>>>(partial, N, num_classes, tiles, tp, fp, fn);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace siteflow
