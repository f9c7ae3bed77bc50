"""The YAML config: its pydantic schema, loading with ${VAR} and paths, dotted overrides."""
