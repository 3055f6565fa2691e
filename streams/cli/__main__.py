"""`python -m streams.cli`: the `spendstream` command without its console script."""

from streams.cli.main import main

raise SystemExit(main())
