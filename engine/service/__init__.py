"""The HTTP valuation service (`tiv serve`): FastAPI on uvicorn, an optional extra.

`app.create_app(settings)` builds the application; `settings` holds keys and limits,
`state` the loaded rules behind an atomic swap, `metrics` the Prometheus counters,
`models` the wire models. Importing this package imports no web framework: only `app`
does, so `state` and `settings` serve the batch and tests without the server extra.
"""
