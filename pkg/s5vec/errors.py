"""Typed errors shared by every layer.

Each error carries a stable ``name`` (its class name) so the worker can hand it to
JavaScript unchanged: the bridge rejects with an ``Error`` whose ``name`` is this.
Every check that raises one of these runs *before* any state is changed.
"""
from __future__ import annotations


class S5VecError(Exception):
    """Base of every error s5vec raises on purpose."""

    @property
    def name(self) -> str:
        return type(self).__name__


class InvalidVectorError(S5VecError, ValueError):
    """A vector is not a finite 1-d (or 2-d batch) array of numbers."""


class DimensionError(InvalidVectorError):
    """A vector's length differs from the index dimension."""


class InvalidArgumentError(S5VecError, ValueError):
    """A parameter is out of range or of the wrong type (k, ef, metric, ids...)."""


class UnknownIdError(S5VecError, KeyError):
    """An id that the index does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown id"


class FilterError(S5VecError, ValueError):
    """A metadata filter that cannot be parsed: unknown operator, wrong operand type."""


class FormatError(S5VecError, ValueError):
    """Bytes that are not a valid s5vec chunk or manifest (malformed, truncated, wrong version)."""


class CIDError(S5VecError, ValueError):
    """A string that is not a valid S5 blob CID."""


class IntegrityError(S5VecError):
    """Downloaded bytes whose blake3 hash or size does not match their CID."""


class PortalError(S5VecError):
    """No portal could serve or accept a blob (unreachable, timeout, HTTP error)."""


class NotFoundError(PortalError):
    """Every portal answered, and none holds the blob."""


class ClosedError(S5VecError):
    """The database was closed."""


class AuthError(PortalError):
    """Every portal refused a write for lack of a valid account token (HTTP 401/403); nothing stored."""


class QuotaError(PortalError):
    """A portal refused a write because the account's storage quota or the upload size limit is exceeded (413/507)."""


class NothingToCommitError(InvalidArgumentError):
    """``commit`` on a database with no edits since it was opened or last committed."""


class EmptyQueryError(InvalidArgumentError):
    """A text with nothing to search for: empty, whitespace only, or without any letter or digit."""


class NoKnownTokensError(InvalidArgumentError):
    """A text whose words are all unknown to the text model's vocabulary (e.g. only emoji)."""
