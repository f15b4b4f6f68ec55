"""Reading a dataset: the label tables, which modality a path holds, and one package per modality (``images``,
``text``) that lists, scans and samples it. Imports nothing that measures or reports."""
