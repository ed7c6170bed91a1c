"""`python -m sa_engine`: the same as the `sa-engine` console command."""

from sa_engine.cli import main

raise SystemExit(main())
