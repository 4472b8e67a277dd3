"""`python -m cleanup_job`: run every cleanup task once, print a one-line JSON summary, exit.

Exit 0 when done (or skipped because another run holds the lock); non-zero with a clear log
line when it could not finish.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from cleanup_job.config import CleanupSettings
from cleanup_job.job import CleanupJob
from service_kit.config import load_settings
from service_kit.db import sqlalchemy_url
from service_kit.logs import configure_logging

log = logging.getLogger("cleanup_job")


def main() -> int:
    """Run the job; return the process exit status."""
    settings = load_settings(CleanupSettings)
    configure_logging(settings.log_level)
    if not settings.database_url:
        log.error("DATABASE_URL is not set")
        return 2
    engine = create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=2,
        connect_args={"connect_timeout": 5, "application_name": "cleanup_job"},
    )
    try:
        summary = CleanupJob(engine, settings, lambda: datetime.now(UTC)).run()
    except SQLAlchemyError as exc:
        log.error(
            "cleanup failed",
            extra={"error": type(exc).__name__, "detail": str(exc).splitlines()[0]},
        )
        return 1
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps({"cleanup": asdict(summary)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
