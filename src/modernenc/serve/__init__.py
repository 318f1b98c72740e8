"""`modernenc serve`: a prediction service with token-budget batching, limits, API keys and an audit trail.

engine.py    the one adapter to the model: load a folder, its decision rule, tokenize, score
batching.py  texts from concurrent requests packed into batches by tokens; inference off the loop
audit.py     hash-chained decision and review rows (AuditStore; SQLite by default), verify, export
auth.py      API keys from a file, constant-time comparison
schemas.py   the API's JSON
metrics.py   Prometheus metrics
app.py       the FastAPI routes, limits and errors
server.py    checks, start-up line, uvicorn, drain on SIGTERM
settings.py  the operator's limits
"""
