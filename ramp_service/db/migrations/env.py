"""Alembic environment for schema `ramp`."""

from ramp_service.db.models import Base
from service_kit.migrations import run_migrations

run_migrations(Base.metadata)
