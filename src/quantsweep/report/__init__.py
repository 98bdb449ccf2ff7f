"""Reports: the summary table (one row per cell)."""
