"""Matching: which rules hold for which subjects.

`grammar` (the JSON condition grammar, its contract and limits), `plan` (what a compiled
pack hands the matchers), `registry` (the `Matcher` protocol, the available backends, the
default), and one module per backend: `compiled` (the default), `durable_rules`,
`production` (the JSON grammar interpreted in Python).
"""

from engine.matching.registry import Matcher, available_matchers, default_matcher, matcher_named

__all__ = ["Matcher", "available_matchers", "default_matcher", "matcher_named"]
