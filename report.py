#!/usr/bin/env python
"""One HTML report of finished runs: ``python report.py exps/demo/sequential/a exps/demo/joint/b -o report.html``."""

from siteflow.cli import report_main

if __name__ == "__main__":
    raise SystemExit(report_main())
