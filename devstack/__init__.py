"""The local stack behind `make run`: database, migrations and every process, supervised."""
