"""Beyond one process: training under ``torchrun`` (``distributed``) and prediction on a Dask cluster
(``cluster``)."""
