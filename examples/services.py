"""Services the process connector defines at start-up. Read, never executed.

    python -m genisys.connectors.process --service-file examples/services.py

Relative paths are relative to the connector's working directory: start it from the
repository root (as `python -m genisys...` requires anyway), or give absolute paths.
"""

demo = {
    "name": "demo",
    "command": ["python3", "examples/demo_service.py"],
    "environment": {"PYTHONUNBUFFERED": "1"},
}

ticker = {
    "name": "ticker",
    "command": "sh -c 'while true; do date; sleep 5; done'",
}
