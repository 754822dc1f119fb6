// Torch glue of the CUDA kernels (csrc/cuda/), built only when torch has CUDA (WITH_CUDA).
// Inputs are contiguous CUDA tensors already checked by csrc/ops.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "common.h"

namespace siteflow {
namespace gpu {

// (loss in out_dtype, coef (N, 2, C) float64, status); reads the status back (synchronises).
std::tuple<at::Tensor, at::Tensor, int64_t> dice_forward(const at::Tensor& x, ScalarKind xk, const at::Tensor& y,
                                                         IndexKind yk, int64_t N, int64_t C, int64_t S,
                                                         const LabelSpec& spec, bool do_bg, bool batch_dice,
                                                         double smooth, at::ScalarType out_dtype);

at::Tensor dice_backward(const at::Tensor& x, ScalarKind xk, const at::Tensor& y, IndexKind yk, int64_t N, int64_t C,
                         int64_t S, const LabelSpec& spec, const at::Tensor& coef, const at::Tensor& grad_loss);

// (tp, fp, fn, status) of logits (xk) or, when !from_logits, of an integer prediction (pk).
std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> confusion(const at::Tensor& x, bool from_logits,
                                                                  ScalarKind xk, IndexKind pk, const at::Tensor& y,
                                                                  IndexKind yk, int64_t N, int64_t C, int64_t S,
                                                                  const LabelSpec& spec, int64_t num_classes);

}  // namespace gpu
}  // namespace siteflow
