// Weighted sum of K tensors in one pass: the result is built block by block, each block
// staying in L1 while all K inputs are added into it, so memory traffic is K reads and one
// write (the floor), instead of a read and a write of the result per input.

#include "aggregate.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace siteflow {
namespace {

constexpr int64_t kBlock = 2048;         // elements of the result kept in L1 while the inputs add in
constexpr int64_t kGrain = 1 << 16;      // elements per parallel task

template <typename scalar_t>
void weighted_sum_kernel(const std::vector<const scalar_t*>& inputs, const std::vector<scalar_t>& weights,
                         scalar_t* out, int64_t n) {
  const size_t count = inputs.size();
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t start = begin; start < end; start += kBlock) {
      const int64_t stop = std::min(end, start + kBlock);
      const scalar_t* first = inputs[0];
      const scalar_t w0 = weights[0];
      for (int64_t i = start; i < stop; ++i) out[i] = w0 * first[i];
      for (size_t k = 1; k < count; ++k) {
        const scalar_t* values = inputs[k];
        const scalar_t w = weights[k];
        for (int64_t i = start; i < stop; ++i) out[i] += w * values[i];
      }
    }
  });
}

}  // namespace

at::Tensor weighted_sum(const std::vector<at::Tensor>& inputs, const std::vector<double>& weights,
                        const std::optional<at::Tensor>& out_arg) {
  TORCH_CHECK(!inputs.empty(), "weighted_sum needs at least one tensor");
  TORCH_CHECK(inputs.size() == weights.size(), "weighted_sum: ", inputs.size(), " tensors but ", weights.size(),
              " weights");
  const at::Tensor& first = inputs[0];
  TORCH_CHECK(first.is_cpu(), "weighted_sum runs on CPU tensors, got ", first.device());
  TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble,
              "weighted_sum takes float32 or float64 tensors, got ", first.scalar_type());
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    TORCH_CHECK(inputs[k].sizes() == first.sizes() && inputs[k].scalar_type() == first.scalar_type() &&
                    inputs[k].is_cpu(),
                "weighted_sum: tensor ", k, " is ", inputs[k].scalar_type(), inputs[k].sizes(), " on ",
                inputs[k].device(), ", tensor 0 is ", first.scalar_type(), first.sizes(), " on ", first.device());
    contiguous.push_back(inputs[k].contiguous());
  }
  at::Tensor out;
  if (out_arg.has_value()) {
    out = *out_arg;
    TORCH_CHECK(out.sizes() == first.sizes() && out.scalar_type() == first.scalar_type() && out.is_cpu() &&
                    out.is_contiguous(),
                "weighted_sum: out must be a contiguous CPU tensor of the inputs' shape and dtype");
    for (const auto& input : contiguous) {
      TORCH_CHECK(!out.is_alias_of(input), "weighted_sum: out must not share memory with an input");
    }
  } else {
    out = at::empty(first.sizes(), first.options().memory_format(at::MemoryFormat::Contiguous));
  }
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "weighted_sum", [&] {
    std::vector<const scalar_t*> pointers;
    std::vector<scalar_t> factors;
    for (size_t k = 0; k < contiguous.size(); ++k) {
      pointers.push_back(contiguous[k].data_ptr<scalar_t>());
      factors.push_back(static_cast<scalar_t>(weights[k]));
    }
    weighted_sum_kernel<scalar_t>(pointers, factors, out.data_ptr<scalar_t>(), first.numel());
  });
  return out;
}

}  // namespace siteflow
