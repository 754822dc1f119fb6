"""Build script. The package metadata lives in pyproject.toml.

Builds the compiled Dice kernels siteflow._C from csrc/ as a torch extension, against the torch
already installed (``pip install --no-build-isolation --no-deps -e .``; see the Makefile):

- always the C++ kernels (csrc/ops.cpp, csrc/cpu/), parallel with OpenMP through at::parallel_for;
- also the CUDA kernels (csrc/cuda/*.cu, which include no torch headers, and their torch glue
  csrc/cuda_glue.cpp) when torch is a CUDA build and nvcc is found (CUDA_HOME or PATH).

SITEFLOW_BUILD_CUDA=0 skips the CUDA kernels, SITEFLOW_BUILD_CUDA=1 fails if they cannot be built
(default: build them when possible). A C++ compiler is required.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc")

CXX_FLAGS = [
    "-O3",  # vectorises the block loops
    "-g0",  # no debug information (the .so is about 11 MB with it)
    "-fopenmp",  # at::parallel_for runs serially without it
    "-ffp-contract=fast",  # fused multiply-adds in the polynomial exp
    "-fno-trapping-math",  # lets loops with selects and divisions vectorise (no FP exceptions are used)
    "-fno-loop-unroll-and-jam",  # -O3's unroll-and-jam turns the per-class loops into scalar code
    "-fvisibility=hidden",
    "-Wno-psabi",  # notes about 32-byte vector arguments: vec.h's helpers are always inlined
]
NVCC_FLAGS = ["-O3"]


def _want_cuda(torch, cpp_extension) -> bool:
    choice = os.environ.get("SITEFLOW_BUILD_CUDA", "auto").strip().lower()
    if choice in ("0", "no", "false", "off"):
        return False
    available = bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None
    if available:
        available = Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists()
    if choice in ("1", "yes", "true", "on") and not available:
        sys.exit(
            "SITEFLOW_BUILD_CUDA=1 but the CUDA kernels cannot be built: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={cpp_extension.CUDA_HOME!r}"
        )
    return available


def extension_setup() -> dict:
    """setup() arguments of the siteflow._C extension."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        sys.exit(
            "siteflow builds its compiled kernels against the installed torch: install the requirements "
            "first (pip install -r requirements.txt), then pip install --no-build-isolation --no-deps -e ."
        )

    sources = [str(CSRC / "ops.cpp"), str(CSRC / "aggregate.cpp"), str(CSRC / "cpu" / "kernels.cpp")]
    depends = [str(p.relative_to(ROOT)) for p in sorted((ROOT / CSRC).rglob("*")) if p.is_file()]
    kwargs = dict(
        name="siteflow._C",
        depends=depends,
        include_dirs=[str(ROOT / CSRC)],
        extra_link_args=["-fopenmp"],
    )
    if _want_cuda(torch, cpp_extension):
        sources += [str(CSRC / "cuda_glue.cpp"), str(CSRC / "cuda" / "kernels.cu")]
        extension = cpp_extension.CUDAExtension(
            sources=sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            **kwargs,
        )
    else:
        extension = cpp_extension.CppExtension(sources=sources, extra_compile_args={"cxx": CXX_FLAGS}, **kwargs)
    return dict(
        ext_modules=[extension],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    )


setup(**extension_setup())
