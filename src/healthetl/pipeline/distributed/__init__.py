"""Loads whose per-partition work runs on a cluster (``healthetl run --engine dask``): the
partitions' worker task, their staging tables, and the coordinator that moves the staged rows
into the tables in the run's one transaction."""
