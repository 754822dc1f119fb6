#!/usr/bin/env python
"""Sample-wise test of a trained run: ``python predict_test.py -c demo/sequential -n quick``."""

from siteflow.cli import predict_main

if __name__ == "__main__":
    raise SystemExit(predict_main())
