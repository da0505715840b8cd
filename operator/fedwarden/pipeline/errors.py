"""The pipeline's exceptions.

A tiny hierarchy in the manner of kopf's: callers catch :class:`PipelineError` for anything the
pipeline refuses, or a subclass when they act on the reason. Misuse of an API (an unknown
aggregator name, impossible parameters) raises the built-in :class:`ValueError`, as the design's
stable interface promises.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class InvalidCohortError(PipelineError, ValueError):
    """The cohort as a whole cannot be aggregated (empty, too few clients, wrong shape)."""


class PrivacyBudgetExhaustedError(PipelineError):
    """Running the requested round would spend more privacy budget than the training allows."""


class UnsoundPrivacyError(PipelineError, ValueError):
    """A combination of aggregator and DP mode for which no sound sensitivity bound is known."""
