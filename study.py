#!/usr/bin/env python
"""Run a whole comparison: ``python study.py studies/demo.yaml [--dry-run] [--workers N]``."""

from siteflow.cli import study_main

if __name__ == "__main__":
    raise SystemExit(study_main())
