// Weighted sums of sites' weights for federated aggregation (siteflow.aggregation).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace siteflow {

// sum_i weights[i] * inputs[i] in one pass over memory: every input read once, the result
// written once (into ``out`` when given: a contiguous tensor of the inputs' shape and dtype
// that aliases none of them). CPU, float32 or float64, all inputs of one shape and dtype.
at::Tensor weighted_sum(const std::vector<at::Tensor>& inputs, const std::vector<double>& weights,
                        const std::optional<at::Tensor>& out);

}  // namespace siteflow
