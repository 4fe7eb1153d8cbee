"""Alembic migrations of the SQL registry (run by :func:`cloud.db.migrate`)."""
