"""`mlcli init`: a commented starting config from a table mlcli has never seen."""
