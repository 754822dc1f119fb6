// siteflow._C: the torch glue of the Dice kernels (argument checks, allocation, dispatch to the
// CPU kernels of csrc/cpu/ or, in a CUDA build, the CUDA kernels of csrc/cuda/).
//
// The Python face (siteflow/kernels/ops.py) checks the arguments first, with the error messages
// of the reference implementation; the checks here only keep direct calls memory-safe.

#include <torch/extension.h>

#include <optional>
#include <tuple>

#include "aggregate.h"
#include "common.h"
#include "cpu/kernels.h"
#ifdef WITH_CUDA
#include "cuda_glue.h"
#endif

namespace siteflow {
namespace {

ScalarKind scalar_kind(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ScalarKind::Float32;
    case at::kDouble:
      return ScalarKind::Float64;
    case at::kHalf:
      return ScalarKind::Float16;
    case at::kBFloat16:
      return ScalarKind::BFloat16;
    default:
      break;
  }
  TORCH_CHECK_TYPE(false, name, " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  return ScalarKind::Float32;  // not reached
}

IndexKind index_kind(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kByte:
      return IndexKind::UInt8;
    case at::kLong:
      return IndexKind::Int64;
    default:
      break;
  }
  TORCH_CHECK_TYPE(false, name, " must be int64 or uint8, got ", t.scalar_type());
  return IndexKind::Int64;  // not reached
}

// Checks logits (N, C, *spatial) and labels (N, *spatial) on one device.
void check_pair(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 4 || logits.dim() == 5, "logits must have shape (N, C, H, W) or (N, C, D, H, W), got ",
              logits.sizes());
  TORCH_CHECK(logits.size(1) >= 1, "logits must have at least one channel, got shape ", logits.sizes());
  std::vector<int64_t> shape{logits.size(0)};
  for (int64_t d = 2; d < logits.dim(); ++d) shape.push_back(logits.size(d));
  TORCH_CHECK(labels.sizes() == at::IntArrayRef(shape), "labels must have shape ", at::IntArrayRef(shape), ", got ",
              labels.sizes());
  TORCH_CHECK(labels.device() == logits.device(), "labels must be on the device of the logits (", logits.device(),
              "), got ", labels.device());
}

void check_device(const at::Tensor& t) {
#ifdef WITH_CUDA
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), "siteflow._C supports CPU and CUDA tensors, got ", t.device());
#else
  TORCH_CHECK(t.is_cpu(), "siteflow._C was built without CUDA and supports CPU tensors only, got ", t.device());
#endif
}

LabelSpec label_spec(int64_t num_classes, std::optional<int64_t> ignore_index) {
  return LabelSpec{num_classes, ignore_index.has_value(), ignore_index.value_or(0)};
}

int64_t spatial_size(const at::Tensor& logits) {
  int64_t S = 1;
  for (int64_t d = 2; d < logits.dim(); ++d) S *= logits.size(d);
  return S;
}

// Returns (loss, coef, status): the loss as a 0-dim tensor (float64 for float64 logits, float32
// otherwise), the gradient coefficients (N, 2, C) float64 for dice_backward, and the status bits.
std::tuple<at::Tensor, at::Tensor, int64_t> dice_forward(const at::Tensor& logits, const at::Tensor& labels,
                                                         bool do_bg, bool batch_dice, double smooth,
                                                         std::optional<int64_t> ignore_index) {
  const ScalarKind xk = scalar_kind(logits, "logits");
  const IndexKind yk = index_kind(labels, "labels");
  check_pair(logits, labels);
  check_device(logits);
  const int64_t N = logits.size(0), C = logits.size(1), S = spatial_size(logits);
  const LabelSpec spec = label_spec(std::max<int64_t>(C, 2), ignore_index);
  const auto out_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
#ifdef WITH_CUDA
  if (logits.is_cuda()) {
    return gpu::dice_forward(logits.contiguous(), xk, labels.contiguous(), yk, N, C, S, spec, do_bg, batch_dice,
                             smooth, out_dtype);
  }
#endif
  const at::Tensor x = logits.contiguous(), y = labels.contiguous();
  at::Tensor sums = at::empty({N, 3, C}, x.options().dtype(at::kDouble));
  at::Tensor coef = at::empty({N, 2, C}, x.options().dtype(at::kDouble));
  const int status = cpu::dice_sums(xk, x.data_ptr(), yk, y.data_ptr(), N, C, S, spec, sums.data_ptr<double>());
  double loss = 0.0;
  dice_finalize(sums.data_ptr<double>(), N, C, do_bg, batch_dice, smooth, coef.data_ptr<double>(), &loss);
  return {at::scalar_tensor(loss, x.options().dtype(out_dtype)), coef, status};
}

// The gradient of the loss with respect to the logits, given dice_forward's coef and the
// gradient of the loss (a 0-dim tensor).
at::Tensor dice_backward(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& coef,
                         const at::Tensor& grad_loss, std::optional<int64_t> ignore_index) {
  const ScalarKind xk = scalar_kind(logits, "logits");
  const IndexKind yk = index_kind(labels, "labels");
  check_pair(logits, labels);
  check_device(logits);
  const int64_t N = logits.size(0), C = logits.size(1), S = spatial_size(logits);
  TORCH_CHECK(coef.scalar_type() == at::kDouble && coef.sizes() == at::IntArrayRef({N, 2, C}) &&
                  coef.device() == logits.device(),
              "coef must be float64 (N, 2, C) on the logits' device");
  TORCH_CHECK(grad_loss.numel() == 1, "the gradient of the loss must have one element");
  const LabelSpec spec = label_spec(std::max<int64_t>(C, 2), ignore_index);
#ifdef WITH_CUDA
  if (logits.is_cuda()) {
    return gpu::dice_backward(logits.contiguous(), xk, labels.contiguous(), yk, N, C, S, spec, coef.contiguous(),
                              grad_loss);
  }
#endif
  const at::Tensor x = logits.contiguous(), y = labels.contiguous(), k = coef.contiguous();
  at::Tensor grad = at::empty_like(x);
  cpu::dice_backward(xk, x.data_ptr(), yk, y.data_ptr(), N, C, S, spec, k.data_ptr<double>(),
                     grad_loss.item<double>(), grad.data_ptr());
  return grad;
}

// Returns (tp, fp, fn, status): per-sample per-class counts (N, num_classes) int64 of the argmax
// of logits (N, C, *spatial) or of an integer prediction (N, *spatial), and the status bits.
std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> confusion(const at::Tensor& logits_or_pred,
                                                                  const at::Tensor& labels, int64_t num_classes,
                                                                  std::optional<int64_t> ignore_index) {
  TORCH_CHECK(num_classes >= 2, "num_classes must be at least 2, got ", num_classes);
  check_device(logits_or_pred);
  const bool from_logits = logits_or_pred.is_floating_point();
  int64_t N = logits_or_pred.size(0), C = 1, S = 1;
  if (from_logits) {
    scalar_kind(logits_or_pred, "logits_or_pred");
    check_pair(logits_or_pred, labels);
    C = logits_or_pred.size(1);
    TORCH_CHECK(C == num_classes || (C == 1 && num_classes == 2), "logits_or_pred has ", C,
                " channels, but num_classes is ", num_classes);
    S = spatial_size(logits_or_pred);
  } else {
    index_kind(logits_or_pred, "logits_or_pred");
    TORCH_CHECK(logits_or_pred.dim() == 3 || logits_or_pred.dim() == 4,
                "an integer logits_or_pred must have shape (N, H, W) or (N, D, H, W), got ", logits_or_pred.sizes());
    TORCH_CHECK(labels.sizes() == logits_or_pred.sizes(), "labels must have shape ", logits_or_pred.sizes(), ", got ",
                labels.sizes());
    TORCH_CHECK(labels.device() == logits_or_pred.device(), "labels must be on the device of logits_or_pred");
    for (int64_t d = 1; d < logits_or_pred.dim(); ++d) S *= logits_or_pred.size(d);
  }
  const IndexKind yk = index_kind(labels, "labels");
  const LabelSpec spec = label_spec(num_classes, ignore_index);
  const at::Tensor x = logits_or_pred.contiguous(), y = labels.contiguous();
#ifdef WITH_CUDA
  if (x.is_cuda()) {
    const ScalarKind xk = from_logits ? scalar_kind(x, "logits_or_pred") : ScalarKind::Float32;
    const IndexKind pk = from_logits ? IndexKind::Int64 : index_kind(x, "logits_or_pred");
    return gpu::confusion(x, from_logits, xk, pk, y, yk, N, C, S, spec, num_classes);
  }
#endif
  const auto options = x.options().dtype(at::kLong);
  at::Tensor tp = at::empty({N, num_classes}, options), fp = at::empty({N, num_classes}, options),
             fn = at::empty({N, num_classes}, options);
  int status;
  if (from_logits) {
    status = cpu::confusion_logits(scalar_kind(x, "logits_or_pred"), x.data_ptr(), yk, y.data_ptr(), N, C, S, spec,
                                   num_classes, tp.data_ptr<int64_t>(), fp.data_ptr<int64_t>(),
                                   fn.data_ptr<int64_t>());
  } else {
    status = cpu::confusion_pred(index_kind(x, "logits_or_pred"), x.data_ptr(), yk, y.data_ptr(), N, S, spec,
                                 num_classes, tp.data_ptr<int64_t>(), fp.data_ptr<int64_t>(), fn.data_ptr<int64_t>());
  }
  return {tp, fp, fn, status};
}

}  // namespace
}  // namespace siteflow

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "siteflow's compiled Dice kernels (see siteflow.kernels)";
  m.def("dice_forward", &siteflow::dice_forward, "Soft Dice loss: (loss, coef, status)", py::arg("logits"),
        py::arg("labels"), py::arg("do_bg"), py::arg("batch_dice"), py::arg("smooth"), py::arg("ignore_index"));
  m.def("dice_backward", &siteflow::dice_backward, "Gradient of the soft Dice loss with respect to the logits",
        py::arg("logits"), py::arg("labels"), py::arg("coef"), py::arg("grad_loss"), py::arg("ignore_index"));
  m.def("confusion", &siteflow::confusion, "Per-sample per-class (tp, fp, fn, status)", py::arg("logits_or_pred"),
        py::arg("labels"), py::arg("num_classes"), py::arg("ignore_index"));
  m.def("weighted_sum", &siteflow::weighted_sum, "sum_i weights[i] * inputs[i] in one pass (federated aggregation)",
        py::arg("inputs"), py::arg("weights"), py::arg("out") = py::none());
  m.def("cpu_isa", &siteflow::cpu::cpu_isa, "Instruction set of the CPU kernels: 'avx2' or 'default'");
  m.def(
      "set_cpu_isa", [](const std::string& name) { return siteflow::cpu::set_cpu_isa(name.c_str()); },
      "Force the CPU kernels' instruction set: 'default' or 'auto' (tests)");
  m.def("set_block_pixels", &siteflow::cpu::set_block_pixels, "Pixels per CPU block, 0 for automatic (tests)");
  m.attr("BAD_LABEL") = siteflow::kBadLabel;
  m.attr("BAD_PREDICTION") = siteflow::kBadPrediction;
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
