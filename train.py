#!/usr/bin/env python
"""Train a multi-site experiment: ``python train.py -c demo/sequential -n quick [-g 0]``."""

from siteflow.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
