"""The repository's own rules: small source files, a code map that names every module, a short README."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src"


def modules() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_source_file_over_900_lines():
    long = {str(p.relative_to(REPO)): n for p in modules() if (n := len(p.read_text().splitlines())) > 900}
    assert not long, long


def test_the_code_map_names_every_module():
    """docs/architecture.md names each module (a package's modules may be listed together in its row)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for path in modules():
        if path.name in ("__init__.py", "__main__.py") and path.parent.name != "dia_llama":
            continue
        if path.name not in text:
            missing.append(str(path.relative_to(SOURCE)))
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) < 150
