"""The run directory: its layout, manifest, loading and listing."""
