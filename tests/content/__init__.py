"""Content store tests: the conformance suite (suite.py) and the local store."""
