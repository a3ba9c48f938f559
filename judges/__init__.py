"""traitlab.judges: LLM judges (client, local provider, rating, aggregation, distilled reward)."""

from traitlab.judges.client import CallOutcome, JudgeClient, Request

__all__ = ["CallOutcome", "JudgeClient", "Request"]
