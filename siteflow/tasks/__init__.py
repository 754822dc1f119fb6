"""The ML problems siteflow trains (segmentation, multi-label classification)."""
