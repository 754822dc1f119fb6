// Torch glue of the CUDA kernels: allocation on the inputs' device, launch on the current
// stream, status read-back. Built only when torch has CUDA (WITH_CUDA).

#include "cuda_glue.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "cuda/kernels.h"

namespace siteflow {
namespace gpu {
namespace {

void check(cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, "siteflow._C: CUDA kernel launch failed: ", cudaGetErrorString(error));
}

cudaStream_t current_stream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.get_device()).stream(); }

}  // namespace

std::tuple<at::Tensor, at::Tensor, int64_t> dice_forward(const at::Tensor& x, ScalarKind xk, const at::Tensor& y,
                                                         IndexKind yk, int64_t N, int64_t C, int64_t S,
                                                         const LabelSpec& spec, bool do_bg, bool batch_dice,
                                                         double smooth, at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto doubles = x.options().dtype(at::kDouble);
  const int64_t tiles = cuda::tiles_per_sample(S);
  at::Tensor partial = at::empty({std::max<int64_t>(N * tiles * 3 * C, 1)}, doubles);
  at::Tensor sums = at::empty({N, 3, C}, doubles);
  at::Tensor coef = at::empty({N, 2, C}, doubles);
  at::Tensor loss = at::empty({}, doubles);
  at::Tensor status = at::zeros({1}, x.options().dtype(at::kInt));
  check(cuda::dice_forward(xk, x.data_ptr(), yk, y.data_ptr(), N, C, S, spec, do_bg, batch_dice, smooth,
                           partial.data_ptr<double>(), sums.data_ptr<double>(), coef.data_ptr<double>(),
                           loss.data_ptr<double>(), status.data_ptr<int>(), current_stream(x)));
  const int64_t bits = status.item<int>();
  return {loss.to(out_dtype), coef, bits};
}

at::Tensor dice_backward(const at::Tensor& x, ScalarKind xk, const at::Tensor& y, IndexKind yk, int64_t N, int64_t C,
                         int64_t S, const LabelSpec& spec, const at::Tensor& coef, const at::Tensor& grad_loss) {
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor scaled = (coef * grad_loss.reshape({}).to(coef.device(), at::kDouble)).contiguous();
  at::Tensor grad = at::empty_like(x);
  check(cuda::dice_backward(xk, x.data_ptr(), yk, y.data_ptr(), N, C, S, spec, scaled.data_ptr<double>(),
                            grad.data_ptr(), current_stream(x)));
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> confusion(const at::Tensor& x, bool from_logits,
                                                                  ScalarKind xk, IndexKind pk, const at::Tensor& y,
                                                                  IndexKind yk, int64_t N, int64_t C, int64_t S,
                                                                  const LabelSpec& spec, int64_t num_classes) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto longs = x.options().dtype(at::kLong);
  const int64_t tiles = cuda::tiles_per_sample(S);
  at::Tensor partial = at::empty({std::max<int64_t>(N * tiles * 3 * num_classes, 1)}, x.options().dtype(at::kInt));
  at::Tensor tp = at::empty({N, num_classes}, longs);
  at::Tensor fp = at::empty({N, num_classes}, longs);
  at::Tensor fn = at::empty({N, num_classes}, longs);
  at::Tensor status = at::zeros({1}, x.options().dtype(at::kInt));
  check(cuda::confusion(!from_logits, xk, pk, x.data_ptr(), yk, y.data_ptr(), N, C, S, spec, num_classes,
                        partial.data_ptr<int32_t>(), tp.data_ptr<int64_t>(), fp.data_ptr<int64_t>(),
                        fn.data_ptr<int64_t>(), status.data_ptr<int>(), current_stream(x)));
  const int64_t bits = status.item<int>();
  return {tp, fp, fn, bits};
}

}  // namespace gpu
}  // namespace siteflow
