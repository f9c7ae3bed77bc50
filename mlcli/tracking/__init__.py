"""Sending runs to TensorBoard and MLflow."""
