"""Exception types shared by the model, the predictor and the data code."""
from __future__ import annotations

import os
from pathlib import Path


class InputFileNotFoundError(FileNotFoundError, ValueError):
    """A named input file does not exist. Both a FileNotFoundError and a ValueError, so either handler works."""


def existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{what} not found: {path}")
    return path
