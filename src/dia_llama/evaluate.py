"""Evaluate a Dia-LLaMA checkpoint on a data set split (the entry point; the library is `dia_llama.evaluation`).

    python -m dia_llama.evaluate MODEL --data DATA --split test --output-dir OUT     # or: dia-llama evaluate ...

Run it as a module: a script named evaluate.py started from its own folder would shadow the `evaluate` library.
Writes `predictions.jsonl` (resumable), `metrics.json` and `metrics.md`.
"""

from __future__ import annotations

import sys

from .evaluation import evaluate_model, metrics_markdown

__all__ = ["evaluate_model", "metrics_markdown", "main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
