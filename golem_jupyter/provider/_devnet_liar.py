"""DEVNET ONLY: a provider agent whose workers lie, for ``golem devnet --liars N``.

``python -m golem_jupyter.provider._devnet_liar FRACTION [golem provider run options]`` runs
``golem provider run`` with :attr:`~.agent.ProviderConfig.lie_fraction` set to ``FRACTION``: its
workers return wrong values for that fraction of their tasks (:mod:`golem_jupyter.worker._liar`).
Only the devnet starts it; ``golem provider run`` has no option for it, and the agent refuses to
lie on a chain that is not a devnet's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import _parser, _provider_run
    from ..errors import GolemError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m golem_jupyter.provider._devnet_liar FRACTION [provider run options]", file=sys.stderr)
        return 2
    fraction = float(argv[0])
    if not 0 <= fraction <= 1:
        print(f"golem: the lie fraction must be from 0 to 1, not {argv[0]}", file=sys.stderr)
        return 2
    args = _parser().parse_args(["provider", "run", *argv[1:]])
    try:
        return _provider_run(args, lie_fraction=fraction)
    except GolemError as error:
        print(f"golem: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
