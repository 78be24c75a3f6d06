"""Test helpers (fixture builders, servers, reference readers) imported by the tests as `helpers.<module>`."""
