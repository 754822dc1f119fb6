// CPU kernels of siteflow._C: raw pointers in, no torch types (the glue is csrc/ops.cpp).
#pragma once

#include <cstdint>

#include "../common.h"

namespace siteflow {
namespace cpu {

// Per-sample sums of the soft Dice loss: sums (N, 3, C) float64, rows I, P, Y (see common.h).
// Returns a status (kBadLabel). C == 1 means a sigmoid output for foreground class 1.
int dice_sums(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
              const LabelSpec& spec, double* sums);

// Gradient of the loss with respect to the logits: grad (N, C, S) of the logits' type, from
// coef (N, 2, C) (rows dL/dP, dL/dI; see dice_finalize) times scale.
void dice_backward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                   const LabelSpec& spec, const double* coef, double scale, void* grad);

// Confusion counts tp, fp, fn, each (N, num_classes) int64, of the argmax over C of logits
// (N, C, S) (for C == 1: logit > 0). Returns a status (kBadLabel).
int confusion_logits(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                     const LabelSpec& spec, int64_t num_classes, int64_t* tp, int64_t* fp, int64_t* fn);

// The same from an integer prediction (N, S). Returns a status (kBadLabel | kBadPrediction).
int confusion_pred(IndexKind pk, const void* pred, IndexKind yk, const void* y, int64_t N, int64_t S,
                   const LabelSpec& spec, int64_t num_classes, int64_t* tp, int64_t* fp, int64_t* fn);

// The instruction set of the kernels in use: "avx2" (x86-64 with AVX2 and FMA) or "default".
const char* cpu_isa();
// Force "default" (or back to "auto"); for tests and benchmarks. Returns false for an unknown name.
bool set_cpu_isa(const char* name);
// Pixels per block of one sample (0: automatic, from C). For tests and tuning.
void set_block_pixels(int64_t pixels);

}  // namespace cpu
}  // namespace siteflow
