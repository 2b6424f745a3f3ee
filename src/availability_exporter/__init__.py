"""availability-exporter: probes HTTP endpoints, reports per-domain availability, serves metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("availability-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
