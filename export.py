#!/usr/bin/env python
"""Export a trained model: ``python export.py -c demo/sequential -n quick -o exported/``."""

from siteflow.cli import export_main

if __name__ == "__main__":
    raise SystemExit(export_main())
