"""Persistence of the quote context: models, repository, migrations (schema `quote`)."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA = "quote"
