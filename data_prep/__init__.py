"""Corpus preparation: each corpus into the one CSV manifest schema."""
