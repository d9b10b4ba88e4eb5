"""Content store tests: the local and in-memory stores through ctrd.testing.content_suite."""
