"""Running a saved model on raw columns, and `mlcli predict`."""
