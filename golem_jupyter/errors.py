"""Errors a user of golem-jupyter can meet.

Every error says what happened and what to do about it. All derive from :class:`GolemError`,
so ``except GolemError`` catches anything this package raises on purpose.
"""

from __future__ import annotations


class GolemError(Exception):
    """Base class of every error golem-jupyter raises on purpose."""


class ConfigurationError(GolemError):
    """Something the user configured (a file, an option, an environment variable) is wrong."""


class NetworkUnreachable(GolemError):
    """The chain's JSON-RPC endpoint did not answer."""


class ChainMismatch(GolemError):
    """The chain answering at a URL is not the one the connection details were recorded for."""


class InvalidInput(GolemError, ValueError):
    """An argument was refused before anything was sent to the chain."""


class WrongPassword(GolemError):
    """A keystore file could not be decrypted with the password given."""


class BudgetExceeded(GolemError):
    """Metered work reached the budget: what was left was cancelled, what ran is settled."""


class VerificationError(GolemError):
    """Providers returned different results for a task and nothing could decide which is right (``--verify``)."""


class MarketError(GolemError):
    """The market could not provide what was asked (no matching offers, every provider refused)."""
