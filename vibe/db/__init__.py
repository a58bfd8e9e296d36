"""The database interface and its two adapters (PostgreSQL through aiopg, SQLite through
aiosqlite), prepared statements, group commit, migrations and row security. Imports no other
concern."""
