"""What a command prints on the terminal, and what goes to its log file only.

By default the terminal shows siteflow's own messages (a run's place in the study, its stages,
the results) and what asks the user to act: errors from anywhere, and the warnings that
siteflow's own code raises. The libraries' chatter (Lightning's device banners, model summaries
and advertising tips, dependencies' deprecation warnings, warnings about settings a config
makes on purpose, such as few data-loader workers) goes to the log file alone, where nothing is
lost. ``verbose`` shows everything on the terminal too, at debug level.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LIBRARY_LOGGERS = ("lightning", "pytorch_lightning", "lightning_fabric")
"""Loggers that install a terminal handler of their own when imported before logging is set
up (Lightning does); their records are sent through the root logger's handlers instead."""

OWN_CODE = str(Path(__file__).resolve().parents[1])
"""The folder of siteflow's package: warnings raised by code in it are shown on the terminal."""

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleFilter(logging.Filter):
    """Passes siteflow's own records, every error, and the warnings raised by siteflow's code."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "py.warnings":
            return warning_source(record).startswith(OWN_CODE)
        return record.name == "siteflow" or record.name.startswith("siteflow.")


def warning_source(record: logging.LogRecord) -> str:
    """The file that raised a warning captured by :func:`logging.captureWarnings` (its message
    reads ``path:line: Category: text``)."""
    text = str(record.args[0]) if record.args else record.getMessage()
    return text.split(":", 1)[0]


def configure_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    """Log to the terminal (filtered by :class:`ConsoleFilter` unless ``verbose``) and, when
    given, to ``log_file`` (everything at info level, debug with ``verbose``). Python warnings
    are logged too (``py.warnings``), so that they reach the log file and the same filter."""
    console = logging.StreamHandler(sys.stderr)
    if not verbose:
        console.addFilter(ConsoleFilter())
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
