"""`mlcli evaluate`: metrics, quality gates and the report it writes."""
