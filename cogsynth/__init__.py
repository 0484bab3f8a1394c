"""Concept generalization and learning from synthetic images: WordNet levels, diffusion-generated datasets, encoder training and probing."""

__version__ = "0.1.0"
