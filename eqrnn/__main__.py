"""`python -m eqrnn`: the `eqrnn` command line."""

from ._cli import main


raise SystemExit(main())
