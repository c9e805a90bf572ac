"""What stands between this process and a stranger: the restricted decoder and its hooks.

Providers are strangers: what their workers send back (results, exceptions, events) is decoded
by :func:`restricted_loads`, never by ``pickle.loads``. It rebuilds only an allowlist (the rules
live in ``_rules.py``, the two unpicklers that apply them in ``_reader.py``):

* Python's value types (None, bool, int, float, complex, str, bytes, bytearray, tuple, list,
  dict, set, frozenset, slice, range), ``types.SimpleNamespace``, ``fractions.Fraction``,
  ``decimal.Decimal``, the ``datetime`` types, ``collections`` containers and ``uuid.UUID``;
* NumPy arrays, dtypes and scalars, never of object dtype;
* exceptions of the ``builtins`` module and of golem_jupyter, with their tracebacks; an
  exception of any other type arrives as :class:`RemoteTaskError`;
* instances of classes defined in the notebook or registered with :func:`allow_class`,
  rebuilt from their state, never by calling the class.

Anything else raises :class:`UnsafePayload` naming the type. :func:`install_decoder` routes
every unpickle distributed does in this process through it (``_hooks.py``).

In the scheduler process, :func:`authorize_by_role` serves each peer by the role its
certificate names: a provider's worker gets the worker protocol and nothing else
(``_authorization.py``), and :func:`unpickle_only_from_the_client` keeps it from unpickling
what anyone but the requestor's client sends; in a provider's worker, :func:`serve_peers_by_role` lets the
session's other workers fetch data and nothing else.

Result verification (DESIGN.md section 6, ``--verify FRACTION``): :class:`Sampler` picks the tasks
to re-run on another provider with randomness held in this process, :func:`compare` judges two
results (exact, or ``allclose`` for floating point), and :func:`digest` hashes a result for the
evidence of ``reportFault`` (``_sampling.py``, ``_compare.py``). A provider's worker puts
:func:`commit` of each result into its report, and the scheduler holds every copy it is handed to
it with :func:`digest_payload` (``_commitment.py``); :func:`install_decoder` also routes this
process's gathers through the scheduler, where that check is (``_gathering.py``).
"""

from __future__ import annotations

from ._authorization import (
    PEER_HANDLERS,
    WORKER_HANDLERS,
    WORKER_STREAM,
    PeerRefused,
    authorize_by_role,
    serve_peers_by_role,
    unpickle_only_from_the_client,
)
from ._commitment import COMMITMENT, commit, digest_payload, is_commitment
from ._compare import DEFAULT_ATOL, DEFAULT_RTOL, Mismatch, compare, default_tolerances, digest
from ._errors import PayloadTooDeep, PayloadTooLarge, RemoteTaskError, UnsafePayload
from ._gathering import gathers_through_the_scheduler, route_through_the_scheduler
from ._hooks import hold as hold_decoder
from ._hooks import install as install_decoder
from ._hooks import installed as decoder_installed
from ._hooks import is_installed as is_decoder_installed
from ._hooks import release as release_decoder
from ._hooks import uninstall as uninstall_decoder
from ._reader import decode_exception, restricted_loads
from ._rules import allow_class, allow_namespace, disallow_class, notebook_class, rebuilds
from ._sampling import Sampler, catch_probability

__all__ = [
    "COMMITMENT",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "PEER_HANDLERS",
    "WORKER_HANDLERS",
    "WORKER_STREAM",
    "Mismatch",
    "PayloadTooDeep",
    "PayloadTooLarge",
    "PeerRefused",
    "RemoteTaskError",
    "Sampler",
    "UnsafePayload",
    "allow_class",
    "allow_namespace",
    "authorize_by_role",
    "catch_probability",
    "commit",
    "compare",
    "decode_exception",
    "decoder_installed",
    "default_tolerances",
    "digest",
    "digest_payload",
    "disallow_class",
    "gathers_through_the_scheduler",
    "hold_decoder",
    "install_decoder",
    "is_commitment",
    "is_decoder_installed",
    "notebook_class",
    "rebuilds",
    "release_decoder",
    "restricted_loads",
    "route_through_the_scheduler",
    "serve_peers_by_role",
    "uninstall_decoder",
    "unpickle_only_from_the_client",
]
