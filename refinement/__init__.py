"""Refinement of a result as a chain of versions (subject, text, region and general modes)."""
