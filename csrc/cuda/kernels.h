// CUDA kernels of siteflow._C: launchers on raw device pointers, no torch types. The torch glue
// that allocates the buffers and calls these is csrc/cuda_glue.cpp (built only when torch has
// CUDA); this header and kernels.cu compile with plain nvcc.
//
// Every launcher enqueues its kernels on `stream` and returns the launch error (cudaSuccess if
// none); none synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common.h"

namespace siteflow {
namespace cuda {

// Pixels per thread block of the kernels below (a block covers one tile of one sample).
int64_t tile_pixels();

// Thread blocks per sample for S pixels: the length of the partial buffers' second axis.
int64_t tiles_per_sample(int64_t S);

// Soft Dice loss: per-tile partial sums (N * tiles, 3, C) float64 in `partial` (scratch), then
// sums (N, 3, C), coef (N, 2, C) and the loss (one float64) as in dice_finalize (common.h).
// Labels outside the classes set kBadLabel in *status (a device int, zeroed by the caller).
cudaError_t dice_forward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                         const LabelSpec& spec, bool do_bg, bool batch_dice, double smooth, double* partial,
                         double* sums, double* coef, double* loss, int* status, cudaStream_t stream);

// Gradient (N, C, S) of the logits' type from coef (N, 2, C) float64 (already multiplied by
// the gradient of the loss).
cudaError_t dice_backward(ScalarKind xk, const void* x, IndexKind yk, const void* y, int64_t N, int64_t C, int64_t S,
                          const LabelSpec& spec, const double* coef, void* grad, cudaStream_t stream);

// Confusion counts of logits (N, C, S) (argmax; C == 1: logit > 0), or, with x_is_pred, of an
// integer prediction (N, S) of kind pk. partial: scratch (N * tiles, 3, num_classes) int32;
// tp, fp, fn: (N, num_classes) int64. Status bits kBadLabel, kBadPrediction in *status.
cudaError_t confusion(bool x_is_pred, ScalarKind xk, IndexKind pk, const void* x, IndexKind yk, const void* y,
                      int64_t N, int64_t C, int64_t S, const LabelSpec& spec, int64_t num_classes, int32_t* partial,
                      int64_t* tp, int64_t* fp, int64_t* fn, int* status, cudaStream_t stream);

}  // namespace cuda
}  // namespace siteflow
