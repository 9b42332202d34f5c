"""Compiling: expressions -> typed closures, conditions -> durable_rules JSON, packs."""
