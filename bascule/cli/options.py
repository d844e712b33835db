"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from bascule.config import DEFAULT_CONFIG_DIR


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--dir``: the deployments directory; every command that reads configuration has it."""
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CONFIG_DIR,
        metavar="DIR",
        help="deployments directory with one YAML file per environment (default: %(default)s)",
    )
