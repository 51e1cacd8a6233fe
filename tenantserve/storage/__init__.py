"""The metadata database: async engine, sessions, Alembic migrations."""
