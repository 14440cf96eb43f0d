"""The embedded default: a local ingest on 127.0.0.1, its SQLite store and reports."""
