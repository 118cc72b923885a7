"""Files: PyTorch state dicts, atomic writes, image grids, TFRecords."""
