"""`python -m dia_llama …` = `dia-llama …`."""

import sys

from .cli import main

sys.exit(main())
