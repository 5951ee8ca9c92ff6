"""The progress log of the command-line tools: INFO lines from this package only.

TensorFlow logs INFO lines of its own through absl (checkpoint sharding, ...) that drown the
training progress; warnings and errors from anywhere still pass.
"""

from __future__ import annotations

import logging
import os

from absl import logging as absl_logging

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ProjectInfoOnly(logging.Filter):
    """Passes records above INFO, and INFO records from modules inside this package's
    directory (matched by path, so a checkout folder called den_tf changes nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or os.path.abspath(record.pathname).startswith(
            PACKAGE_DIR
        )


def show_project_info_only() -> None:
    """Installs ``ProjectInfoOnly`` on absl's log handler."""
    absl_logging.get_absl_handler().addFilter(ProjectInfoOnly())
