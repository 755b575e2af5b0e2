"""Datasets: the AVAGD release layout, its CSV index, and a synthetic task in the same layout."""
from .avagd import IndexRow, read_index, scan_release, write_index
from .dataset import AffordanceDataset

__all__ = ["AffordanceDataset", "IndexRow", "read_index", "scan_release", "write_index"]
