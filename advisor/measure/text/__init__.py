"""Measuring texts: the text backbone (a Hugging Face encoder) and the similarity signals against its source
domain, with the shipped reference statistics in ``references/``."""
