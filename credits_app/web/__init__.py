"""The HTTP plumbing every request passes through, below the blueprints of api/:

- web/framework.py: the Flask app, URL map and request classes (where they differ from stock);
- web/errors.py: every error as one JSON shape, the request id;
- web/json_body.py: the strict JSON body parser;
- web/logs.py: JSON log lines, one per request;
- web/metrics.py: Prometheus metrics at /metrics;
- web/rate_limit.py: per-subject limits counted in Redis;
- web/health.py: /healthz and /readyz.
"""
