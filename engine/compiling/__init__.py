"""Compiling: expressions -> typed closures; conditions -> closures and durable_rules JSON;
packs."""
