#!/usr/bin/env python
"""Paired comparison of two runs' test results: ``python compare.py exps/demo/sequential/a exps/demo/joint/b``."""

from siteflow.cli import compare_main

if __name__ == "__main__":
    raise SystemExit(compare_main())
