"""The `dia-llama` console script.

`dia_llama/__init__.py` registers the model with transformers' Auto classes, which imports torch and transformers
(seconds). The command line itself needs neither until a subcommand runs, so this launcher loads `dia_llama/cli.py`
(standard library only at load time) without running the package's `__init__`: `--help` and `--version` answer at
once. A subcommand then imports what it needs through the package as usual.
"""

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    spec = importlib.util.find_spec("dia_llama")  # finds the package without importing it
    folder = next(iter(spec.submodule_search_locations or []), None) if spec else None
    cli_file = Path(folder) / "cli.py" if folder else None
    if cli_file is None or not cli_file.is_file():  # e.g. a zipped install: import normally
        from dia_llama.cli import main as cli_main

        return cli_main()
    cli_spec = importlib.util.spec_from_file_location("dia_llama.cli", cli_file)
    cli = importlib.util.module_from_spec(cli_spec)
    sys.modules["dia_llama.cli"] = cli
    cli_spec.loader.exec_module(cli)
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
