"""tiv: the Total Insured Value of cross-border cargo, from versioned YAML rule packs.

The pipeline, one package per stage: `loading` (YAML with line marks, rule sources)
-> `schema` (structure) -> `compiling` (formulas, conditions, packs) -> `matching`
(which rules hold: compiled, durable_rules, python) -> `evaluating` (environment,
valuation) -> `explaining` (traces, text).

    from engine import load_rules, value
    rules = load_rules("path/to/rules")
    result = value(rules, "shipment.yaml", policy="standard")
    print(result.total_insured_value)
"""

from engine._version import __version__
from engine.api import AuditSink, claim, load_rules, value, value_many
from engine.compiling.formulas import Function
from engine.errors import (
    EvaluationError,
    FactsError,
    Location,
    Problem,
    RulesError,
    SelectionError,
    TivError,
)
from engine.examples import ExampleOutcome, run_examples
from engine.explaining.render import render_text
from engine.facts import Shipment, read_facts
from engine.functions import custom_function
from engine.loading.sources import FileSystemSource, MemorySource, RuleSource
from engine.matching.registry import Matcher, available_matchers, default_matcher
from engine.result import Claim, Valuation
from engine.ruleset import RuleSet
from engine.schema.models import Loss

__all__ = [
    "AuditSink",
    "Claim",
    "EvaluationError",
    "ExampleOutcome",
    "FactsError",
    "FileSystemSource",
    "Function",
    "Location",
    "Loss",
    "Matcher",
    "MemorySource",
    "Problem",
    "RuleSet",
    "RuleSource",
    "RulesError",
    "SelectionError",
    "Shipment",
    "TivError",
    "Valuation",
    "__version__",
    "available_matchers",
    "claim",
    "custom_function",
    "default_matcher",
    "load_rules",
    "read_facts",
    "render_text",
    "run_examples",
    "value",
    "value_many",
]
