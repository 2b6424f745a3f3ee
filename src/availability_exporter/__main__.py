"""``python -m availability_exporter``."""

from availability_exporter.cli import main

raise SystemExit(main())
