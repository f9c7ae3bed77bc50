"""`mlcli serve`: TensorFlow Serving's REST API over a run or an export."""
