"""siteflow: train one medical imaging model from data that stays at several sites."""

__version__ = "0.1.0"
