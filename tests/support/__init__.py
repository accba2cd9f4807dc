"""Helpers for the tests that run on the production parts (PostgreSQL, Redis, real processes)."""
