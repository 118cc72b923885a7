"""Files: atomic writes, image grids, TFRecords."""
