"""Rebuild `src/dia_llama/resources/report_corpus.txt`, the corpus the `tiny` tokenizer is trained on.

Unique sentences of synthetic reports of both disease sets (deterministic). Run from the repo root:
    python scripts/build_report_corpus.py
"""

import re
from pathlib import Path

import numpy as np

from dia_llama.data.synthetic import make_case, sample_labels

OUT = Path(__file__).resolve().parents[1] / "src" / "dia_llama" / "resources" / "report_corpus.txt"


def main(num_cases: int = 400) -> None:
    sentences: dict[str, None] = {}
    for disease_set in ("chexpert14", "ctrate18"):
        rng = np.random.default_rng(0)
        for labels in sample_labels(rng, num_cases, disease_set):
            _, _, report, _ = make_case(rng, labels, disease_set, volume_size=(16, 16, 8))
            for sentence in re.split(r"(?<=\.)\s+", report.strip()):
                sentences.setdefault(sentence, None)
    OUT.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    print(f"{len(sentences)} sentences → {OUT}")


if __name__ == "__main__":
    main()
