"""Code that runs inside the requestor's scheduler process, and nowhere else.

``python -m golem_jupyter.scheduler`` (:mod:`.__main__`) is that process: a TLS Dask scheduler
started by :class:`~golem_jupyter.GolemCluster`, with three plugins loaded into it:

* :mod:`.metering`: :class:`~.metering.GraphMeter` prices each graph execution per provider
  and holds the budget guard;
* :mod:`.progress`: :class:`~.progress.CellProgress` counts a ``%%golem`` cell's tasks per
  worker for the notebook's progress widget;
* :mod:`.gate`: :class:`~.gate.WorkerGate` holds each provider's worker from tasks until the
  provider confirmed its allocation of the deposit (registered by the kernel before it rents).

The kernel talks to them only through the scheduler's RPC (``golem_*`` handlers and
``run_on_scheduler``), never by importing their state.
"""
