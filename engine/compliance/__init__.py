"""Compliance: what proves a figure and what changes it.

`lock` pins published rule files (rules.lock); `diff` compares two pack versions;
`impact` values a corpus under two versions and compares; `corpus` generates synthetic
shipments for it; `audit/` keeps the tamper-evident record of every valuation (record,
masking, store, replay). All of it sits on the public API of the engine.
"""
