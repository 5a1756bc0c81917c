"""Recipes: an ordered list of stages run over one run directory, resumable at every step."""
