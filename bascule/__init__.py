"""Bascule: blue-green deployments to Kubernetes, run as Prefect flows."""

from functools import cache

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up when first asked for: importing importlib.metadata was a quarter of
    # `bascule --help` (0.08 s -> 0.06 s of CPU without it).
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bascule")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0"
