"""`python -m llmgw.bench ...` (the same as `llmgw bench ...`)."""

import sys

from llmgw.bench.command import main

sys.exit(main())
