"""Logging set-up. Log lines carry message ids, rule codes, destinations and counts — never patient data
(INS, names, birth dates, addresses) nor document bodies; exceptions are logged by type, not by text, where
their text could quote a payload."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("cisis")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
