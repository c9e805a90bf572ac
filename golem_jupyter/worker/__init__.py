"""Code that runs inside a provider's worker process, and nowhere else.

* :mod:`.meter`: the provider's own meter, loaded into each worker with ``--preload``;
* :mod:`.runner`: the programs a ``%%golem`` cell's tasks run.

Everything here may only import what a provider has: golem_jupyter, the standard library,
NumPy and (on GPU providers) CuPy.
"""
