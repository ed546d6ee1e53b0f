"""``python -m benchmarks``: run every core benchmark and write results/core.md."""

import sys

from benchmarks.run import main

sys.exit(main())
