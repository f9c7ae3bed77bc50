"""Reading tables: CSV and Parquet with pyarrow, dialects, a run's sources, splits."""
