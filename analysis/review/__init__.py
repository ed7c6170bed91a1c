"""The review app: browse a release's masks, correct them and add new ones with SAM's help, in the
browser (`python -m analysis.review`). Saves go to a corrections folder (`curation.corrections`)."""

from analysis.review.server import ReviewApp, ReviewServer

__all__ = ["ReviewApp", "ReviewServer"]
