"""Block classes used by the tests (importable by server subprocesses too)."""
