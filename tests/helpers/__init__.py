"""Test helpers (fixture builders, servers) imported by the tests; not tests themselves."""
