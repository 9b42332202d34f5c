"""The HTTP valuation service (`tiv serve`): FastAPI on uvicorn, an optional extra.

`app.create_app(settings)` assembles it: `routes/` one module per resource (valuations,
rules, audit, ops), `errors` (every non-200 answer as JSON), `bodies` (request bodies,
strict JSON), `auth` (API keys and roles), `context` (what the handlers share: rules,
metrics, audit log, thread pool, watcher), `state` (the rules behind an atomic swap),
`settings`, `metrics` (prometheus_client), `models` (wire models) and `server` (uvicorn
with N workers). Importing this package imports no web framework: its modules do.
"""
