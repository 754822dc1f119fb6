"""A whole comparison in one command (``siteflow-study STUDY.yaml``): strategies x seeds
trained in parallel, tested sample by sample, compared with a reference, one report."""

from siteflow.study.spec import RunSpec, Study, StudyError, load_study

__all__ = ["RunSpec", "Study", "StudyError", "load_study"]
