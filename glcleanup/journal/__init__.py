"""Journals of every row changed, and the locks that keep two runs apart."""
