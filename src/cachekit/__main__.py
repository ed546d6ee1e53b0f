"""``python -m cachekit``: the ``cachekit`` command."""

from cachekit.cli import main

raise SystemExit(main())
