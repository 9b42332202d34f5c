"""Evaluating: facts -> environment, condition matchers (durable_rules and the pure-Python
oracle), and the valuation of one shipment against one compiled pack."""
