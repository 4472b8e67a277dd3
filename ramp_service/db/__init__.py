"""Persistence of the ramp context: models, repositories, migrations (schema `ramp`)."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA = "ramp"
