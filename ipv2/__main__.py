"""``python -m ipv2``: the form the Slicer panels use to start engine jobs."""

from ipv2.cli import main

raise SystemExit(main())
