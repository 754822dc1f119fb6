"""Build script. The package metadata lives in pyproject.toml.

The compiled kernels (siteflow._C, from csrc/) are added here as a torch C++/CUDA extension
once csrc/ has sources; until then this builds the pure-Python package.
"""

from setuptools import setup

setup()
