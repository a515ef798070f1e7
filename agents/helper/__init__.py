"""The local helper: overhead work (titles, summaries, history compression, page text,
complexity) done for free, so that paid tokens go only to real work. See docs/helper.md."""

from agents.helper.interface import Complexity, ComplexityLevel, HelperResult, Turn
from agents.helper.operations import (
    helper_classify_complexity,
    helper_compress_history,
    helper_extract_page,
    helper_summarize,
    helper_title,
)

__all__ = [
    "Complexity",
    "ComplexityLevel",
    "HelperResult",
    "Turn",
    "helper_classify_complexity",
    "helper_compress_history",
    "helper_extract_page",
    "helper_summarize",
    "helper_title",
]
