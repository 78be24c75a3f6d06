"""Test helpers (importable as ``helpers.<module>``: tests/ is on sys.path, see conftest.py)."""
