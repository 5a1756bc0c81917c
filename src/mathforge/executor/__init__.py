"""Executors: where a recipe's stages run (the local process by default, or a Ray cluster)."""
