"""Bascule: blue-green deployments to Kubernetes, run as Prefect flows."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bascule")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
