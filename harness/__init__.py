"""Harness: builds problems, checks agreement, times backends, stores results, draws plots."""
