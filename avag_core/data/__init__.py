"""Datasets: the AVAGD release layout, its CSV index, and a synthetic task in the same layout."""
