"""Compatibility re-export: matching moved to `engine.matching` (remove after merging)."""

from engine.matching.grammar import *  # noqa: F403
from engine.matching.grammar import MatchRuleset, PreparedRuleset, prepare
from engine.matching.registry import Matcher, available_matchers, default_matcher, matcher_named

__all__ = [
    "MatchRuleset",
    "Matcher",
    "PreparedRuleset",
    "available_matchers",
    "default_matcher",
    "matcher_named",
    "prepare",
]
