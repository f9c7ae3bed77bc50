"""`mlcli train` and what it needs: the training data, tf.data, fit, devices, tuning."""
