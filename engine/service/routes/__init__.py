"""The routes, one module per resource; each `install(app, service)` adds its own."""

from engine.service.routes import audit, ops, rules, valuations

__all__ = ["audit", "ops", "rules", "valuations"]
