// CPU kernels of siteflow._C: the fused soft Dice loss (forward sums and backward) and the
// confusion counts.
//
// Work is split into tasks of one block of pixels (up to 1024) of one sample; tasks run in
// parallel with at::parallel_for, each writing its own partial sums, which are added up
// afterwards in a fixed order (the results do not depend on the number of threads). Within a
// block, float computations with 2 to 8 classes take eight pixels at a time with all their
// classes in registers (vec.h: one pass over the logits, no intermediate arrays); other cases
// (sigmoid, more classes, float64) run class by class over the block in loops the compiler
// vectorises. The block code (blocks.inc) is compiled twice on x86-64, for AVX2+FMA and for the
// baseline, and the version is picked at run time, so the library runs on any x86-64 CPU.
//
// float32, float16 and bfloat16 inputs are computed in float32 with a polynomial exp (about
// 1 ulp, vectorisable); float64 inputs in float64 with std::exp. Labels are range-checked as
// they are read (a status bit, for the Python side to report).

#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "simd.h"
#include "vec.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define SF_X86 1
#else
#define SF_X86 0
#endif

namespace siteflow {
namespace cpu {
namespace {

namespace isa_default {
#define SF_TARGET
#include "blocks.inc"
#undef SF_TARGET
}  // namespace isa_default

#if SF_X86
namespace isa_avx2 {
#define SF_TARGET __attribute__((target("avx2,fma")))
#include "blocks.inc"
#undef SF_TARGET
}  // namespace isa_avx2
#else
namespace isa_avx2 = isa_default;
#endif

template <class Acc>
using RangeFn = int (*)(const Problem&, int64_t, int64_t, Acc*);

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


#define SF_PICK(NAME, ACC)                                                               \
  template <class A, class B>                                                            \
  RangeFn<ACC> pick_##NAME() {                                                           \
    return use_avx2() ? &isa_avx2::NAME<A, B> : &isa_default::NAME<A, B>;                \
  }

SF_PICK(dice_sums_range, double)
SF_PICK(dice_backward_range, double)
SF_PICK(confusion_logits_range, int64_t)
SF_PICK(confusion_pred_range, int64_t)
#undef SF_PICK

// ---------------------------------------------------------------------------------------------
// Drivers.

std::atomic<int64_t> block_override{0};

int64_t block_pixels(int64_t C) {
  const int64_t forced = block_override.load(std::memory_order_relaxed);
  if (forced > 0) return forced;
  // At most 1024 pixels and about 16 KiB of float32 logits per block, so that a block's
  // logits (and, for C > 8, their exponentials) stay in L1/L2; a multiple of 64, at least 128.
  const int64_t pixels = (4096 / std::max<int64_t>(C, 1)) / 64 * 64;
  return std::min<int64_t>(std::max<int64_t>(pixels, 128), 1024);
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
