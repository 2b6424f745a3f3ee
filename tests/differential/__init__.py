"""The differential test's parts: a scripted raw HTTP server, its case table, and the three
clients (the exporter, curl, httpx) reduced to up/down verdicts. See tests/test_differential.py."""
