"""dia-llama benchmarks: `python -m bench all [--quick]` (see bench/README.md)."""
