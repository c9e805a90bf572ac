"""The requestor's Dask scheduler, run as its own process.

It is a separate process on purpose: the scheduler unpickles the graphs the requestor's client
sends (trusted code), while the requestor process decodes provider bytes only through the
restricted decoder. Keeping them apart lets each process have one rule.

``python -m golem_jupyter.scheduler --credentials DIR --scheduler-file FILE``
listens with TLS and mutual authentication (only certificates from the session's CA get in),
meters graphs with :class:`~.metering.GraphMeter`, holds sampled results until the requestor
checked them (:class:`~.verify.Verifier`), and exits when its parent process dies, so a
killed kernel never leaves a scheduler behind. A task no worker can run (its providers stopped
serving) fails after ``distributed.scheduler.no-workers-timeout``, 30 s unless configured,
instead of waiting forever for a worker that is not coming back.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
from pathlib import Path

import dask
from distributed import Scheduler

from ..market.certificates import security_for
from ..trust._authorization import authorize_by_role, unpickle_only_from_the_client
from .metering import GraphMeter
from .verify import Verifier

PARENT_POLL_SECONDS = 0.5
NO_WORKERS_TIMEOUT = "30s"
NO_WORKERS_KEY = "distributed.scheduler.no-workers-timeout"


async def serve(args: argparse.Namespace) -> None:
    dashboard = args.dashboard and importlib.util.find_spec("bokeh") is not None
    if dask.config.get(NO_WORKERS_KEY, None) is None:
        dask.config.set({NO_WORKERS_KEY: NO_WORKERS_TIMEOUT})
    # No compression on any of this process's connections: a worker's answer then comes as it was
    # serialized, and is digested as it came (a compressed one is refused, never decompressed here).
    dask.config.set({"distributed.comm.compression": None})
    scheduler = Scheduler(
        host=args.host,
        port=0,
        protocol="tls",
        security=security_for(Path(args.credentials), "scheduler"),
        dashboard=dashboard,
        dashboard_address=f"{args.host}:0",  # also serves /health; never the shared default 8787
        idle_timeout=None,
    )
    authorize_by_role(scheduler)  # before it listens: a worker's certificate gets the worker protocol only
    unpickle_only_from_the_client()  # and sends no pickle that this process would run
    meter = GraphMeter()
    # The verifier first: it wraps the scheduler's own "task-finished" handler, so the meter (which
    # wraps what it finds) charges a report when it arrives, and the verifier holds it from Dask.
    scheduler.add_plugin(Verifier(meter))
    scheduler.add_plugin(meter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with scheduler:
        Path(args.scheduler_file).write_text(json.dumps({"address": scheduler.address, "pid": os.getpid()}))
        while not stop.is_set() and scheduler.status.name == "running":
            if os.getppid() != args.parent_pid:
                break  # the requestor is gone; its providers claim with their vouchers
            try:
                await asyncio.wait_for(stop.wait(), PARENT_POLL_SECONDS)
            except TimeoutError:
                pass
        await scheduler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", required=True)
    parser.add_argument("--scheduler-file", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--dashboard", action="store_true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
