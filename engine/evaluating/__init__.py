"""Evaluating: facts -> environment, and the valuation of one shipment against one compiled
pack (the matchers live in `engine.matching`)."""
