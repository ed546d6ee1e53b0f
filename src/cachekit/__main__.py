"""``python -m cachekit``: the ``cachekit`` command."""

from cachekit.cli.app import main

raise SystemExit(main())
