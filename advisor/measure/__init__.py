"""Measuring a dataset with a backbone: the cache of embeddings and measurements, the device check and LogME,
shared by the modalities; one package per modality (``images``, ``text``) with its backbones and signals."""
