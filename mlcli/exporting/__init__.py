"""`mlcli export`: the serving signature, each format, and the check in its runtime."""
