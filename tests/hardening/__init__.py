"""Tests: hardening (failure modes of a real daemon)."""
