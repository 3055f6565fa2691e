"""Options shared by the `spendstream` commands, and the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.errors import SpendstreamError

DATA_DIR_HELP = "embedded data directory (default: SPENDSTREAM_DATA_DIR or ./.spendstream)"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)


def settings_from(args: argparse.Namespace) -> Any:
    """The one Settings of a command: the environment, overridden by its options."""
    from streams.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "pricing", None) is not None:
        overrides["pricing_file"] = Path(args.pricing)
    if getattr(args, "port", None) is not None:
        overrides["web_port"] = int(args.port)
    if getattr(args, "config", None) is not None:
        overrides["config_file"] = Path(args.config)
    settings = Settings(**overrides)
    if settings.pricing_file is not None and not settings.pricing_file.is_file():
        raise SpendstreamError(f"pricing file not found: {settings.pricing_file}")
    return settings
