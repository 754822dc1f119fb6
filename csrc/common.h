// Shared by the CPU kernels, the CUDA kernels and the torch glue: plain C++ (no torch headers),
// usable from host code and from CUDA device code.
//
// Layout conventions of every kernel: logits are contiguous (N, C, S) with S the product of
// the spatial sizes; labels and integer predictions are contiguous (N, S). A label is counted
// when it is not ignore_index; a counted label outside [0, num_label_classes) is invalid (the
// kernels then raise a status bit and count that pixel nowhere; the Python side reports it).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SF_HOST_DEVICE __host__ __device__
#else
#define SF_HOST_DEVICE
#endif

namespace siteflow {

enum class ScalarKind : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };
enum class IndexKind : int { UInt8 = 0, Int64 = 1 };

// Status bits returned by the kernels.
constexpr int kBadLabel = 1;       // a counted label outside [0, num_label_classes)
constexpr int kBadPrediction = 2;  // an integer prediction outside [0, num_classes)

struct LabelSpec {
  int64_t num_classes;  // labels must lie in [0, num_classes) unless ignored
  bool has_ignore;
  int64_t ignore_index;
};

// The class of a label, or -1 for an ignored or invalid one (*bad is set for an invalid one).
SF_HOST_DEVICE inline int32_t label_class(int64_t value, const LabelSpec& spec, bool* bad) {
  const bool ignored = spec.has_ignore && value == spec.ignore_index;
  const bool in_range = static_cast<uint64_t>(value) < static_cast<uint64_t>(spec.num_classes);
  *bad = !ignored && !in_range;
  return (in_range && !ignored) ? static_cast<int32_t>(value) : -1;
}

// Soft Dice loss and its gradient coefficients from the per-sample sums.
//
// sums: (N, 3, C) float64, rows I = sum p*y, P = sum p, Y = sum y of each sample and class.
// coef: (N, 2, C) float64 output, rows dL/dP and dL/dI of each sample and class (for
//   batch_dice the pooled class's coefficients, repeated for every sample).
// loss: 1 - mean Dice over samples (or the batch) and kept classes.
SF_HOST_DEVICE inline void dice_finalize(const double* sums, int64_t N, int64_t C, bool do_bg, bool batch_dice,
                                         double smooth, double* coef, double* loss) {
  const int64_t first = (!do_bg && C > 1) ? 1 : 0;
  const int64_t groups = batch_dice ? 1 : N;
  const double terms = static_cast<double>(groups * (C - first));
  double total = 0.0;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t c = 0; c < C; ++c) {
      double I = 0.0, P = 0.0, Y = 0.0;
      const int64_t n_begin = batch_dice ? 0 : g;
      const int64_t n_end = batch_dice ? N : g + 1;
      for (int64_t n = n_begin; n < n_end; ++n) {
        I += sums[(n * 3 + 0) * C + c];
        P += sums[(n * 3 + 1) * C + c];
        Y += sums[(n * 3 + 2) * C + c];
      }
      const double numerator = 2.0 * I + smooth;
      const double denominator = P + Y + smooth;
      double dP = 0.0, dI = 0.0;
      if (c >= first) {
        total += numerator / denominator;
        dP = numerator / (denominator * denominator) / terms;
        dI = -2.0 / denominator / terms;
      }
      for (int64_t n = n_begin; n < n_end; ++n) {
        coef[(n * 2 + 0) * C + c] = dP;
        coef[(n * 2 + 1) * C + c] = dI;
      }
    }
  }
  *loss = 1.0 - total / terms;
}

}  // namespace siteflow
