"""Encoding raw columns: the Keras preprocessing model and its Arrow twin."""
