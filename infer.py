#!/usr/bin/env python
"""Run a trained model on new images: ``python infer.py -c demo/sequential -n quick scans/ -o masks/``."""

from siteflow.cli import infer_main

if __name__ == "__main__":
    raise SystemExit(infer_main())
