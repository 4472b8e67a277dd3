"""`python -m quote_service.db.migrate`: apply schema `quote` migrations to DATABASE_URL."""

from quote_service.config import QuoteSettings
from quote_service.db import MIGRATIONS_DIR, SCHEMA
from service_kit.config import load_settings
from service_kit.migrations import upgrade


def main() -> None:
    """Migrate to head."""
    settings = load_settings(QuoteSettings)
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")
    upgrade(MIGRATIONS_DIR, settings.database_url, SCHEMA)


if __name__ == "__main__":
    main()
