"""The feature schema: column types, vocabularies and statistics of a table."""
