"""Signed registry pointers for the server front doors: open the index a pointer names, and move
the pointer to each new manifest on commit.

A pointer is an S5 registry entry (ed25519 public key -> manifest CID, with a revision) handled
by :mod:`s5vec.s5.registry`. The server remembers the revision it read; a commit publishes
revision + 1. If a portal already holds a higher revision (someone else moved the pointer), the
portal refuses with 409 and the commit answers :class:`~s5vec.errors.StaleRevisionError` (409):
the new manifest is uploaded and named in the message, the pointer is left where the other writer put it.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidArgumentError, NotFoundError, PortalError, StaleRevisionError


def _registry() -> Any:
    try:
        from ..s5 import registry
    except ImportError:  # pragma: no cover - the registry lands with the signed-pointer branch
        raise InvalidArgumentError("signed pointers need s5vec.s5.registry, which this build lacks") from None
    return registry


class Pointer:
    """One registry pointer: ``pointer`` (base64url public key) and, to move it, the signing ``key_path``."""

    def __init__(self, pointer: str | None, portals: Sequence[str], *, key_path: str | None = None,
                 auth_token: str | None = None, timeout: float = 30.0) -> None:
        reg = _registry()
        self.key = reg.SigningKey.load(key_path) if key_path else None
        if pointer is None:
            if self.key is None:
                raise InvalidArgumentError("a pointer needs --pointer PUBKEY or --pointer-key KEYFILE")
            pointer = self.key.pointer
        elif self.key is not None and self.key.pointer != pointer:
            raise InvalidArgumentError("--pointer-key is not the key of --pointer")
        self.pk = reg.decode_pk(pointer)
        self.pointer = reg.encode_pk(self.pk)
        self.portals = list(portals)
        self.auth_token = auth_token
        self.timeout = timeout
        self.revision: int | None = None

    def resolve(self) -> str:
        """The manifest CID of the highest verified revision on any portal (remembered)."""
        reg = _registry()
        best = None
        problems = []
        for portal in self.portals:
            try:
                entry = reg.get_entry(portal, self.pk, timeout=self.timeout)
            except Exception as exc:  # one portal down is not the pointer's absence
                problems.append(f"{portal}: {exc}")
                continue
            if entry is not None and reg.verify_entry(entry) and (best is None or entry.revision > best.revision):
                best = entry
        if best is None:
            if problems and len(problems) == len(self.portals):
                raise PortalError("registry unreachable: " + "; ".join(problems))
            raise NotFoundError(f"no verified registry entry for pointer {self.pointer}")
        self.revision = best.revision
        return best.cid()

    def publish(self, cid: str) -> int:
        """Point at ``cid`` with the next revision; StaleRevisionError if a portal holds a newer one."""
        reg = _registry()
        if self.key is None:
            raise InvalidArgumentError("moving the pointer needs its signing key (--pointer-key)")
        from ..s5.cid import BlobId

        revision = (self.revision or 0) + 1
        entry = reg.create_entry(self.key, BlobId.parse(cid).to_bytes(), revision)
        stored, stale, errors = 0, [], []
        for portal in self.portals:
            try:
                reg.set_entry(portal, entry, auth_token=self.auth_token, timeout=self.timeout)
                stored += 1
            except PortalError as exc:
                (stale if "HTTP 409" in str(exc) else errors).append(str(exc))
        if stale:
            raise StaleRevisionError(
                f"pointer {self.pointer} moved past revision {revision - 1} (another writer); manifest {cid} "
                f"was uploaded but the pointer was not moved: {'; '.join(stale)}")
        if not stored:
            raise PortalError("no portal stored the registry entry: " + "; ".join(errors))
        self.revision = revision
        return revision
