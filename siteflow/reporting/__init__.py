"""Reading finished runs back: paired comparisons between runs (``siteflow-compare``) and a
self-contained HTML report (``siteflow-report``)."""

from siteflow.reporting.compare import SiteComparison, compare_runs
from siteflow.reporting.runs import FinishedRun, NoFinishedRun, read_run

__all__ = ["FinishedRun", "NoFinishedRun", "SiteComparison", "compare_runs", "read_run"]
