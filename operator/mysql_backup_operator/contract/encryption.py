"""Client-side encryption keys, shared by the agent (which encrypts and decrypts) and the operator
(which checks, before a Restore takes its safety backup, that the policy's key can decrypt the
Backup at all).

The key Secret holds an age identity file: `AGE-SECRET-KEY-1...` lines (private keys) and/or
`age1...` lines (public keys), `#` comments allowed. The first entry's public key encrypts new
backups; every identity can decrypt (rotation: new key on top, old ones below). A backup records
`keyId`, derived from the public key, never the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyrage

from ..api import Reason
from .config import ENCRYPTION_FORMAT


class KeyringError(ValueError):
    """The key Secret's content is not an age identity file. The message never quotes it."""


def key_id(recipient: str) -> str:
    """The id a manifest records: the first 64 bits of sha256 over the public key string.

    Enough to tell which of several keys a backup needs, and safe to show (it is derived from
    the public key, which is not secret either)."""
    return hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """What the key Secret holds: identities (private keys) and/or recipients (public keys).

    Backups encrypt to the first entry's public key; restores can use every identity, so a new
    key goes on top and older ones stay below until their backups are gone (rotation).
    """

    identities: tuple[Any, ...]
    recipients: tuple[Any, ...]  # one per entry, in order; identities contribute their public key

    @property
    def recipient(self) -> Any:
        return self.recipients[0]

    @property
    def current_key_id(self) -> str:
        return key_id(str(self.recipient))

    def identity_for(self, wanted: str) -> Any | None:
        for ident in self.identities:
            if key_id(str(ident.to_public())) == wanted:
                return ident
        return None

    @property
    def key_ids(self) -> list[str]:
        return [key_id(str(i.to_public())) for i in self.identities]


def parse_keyring(text: str) -> Keyring:
    identities: list[Any] = []
    recipients: list[Any] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("AGE-SECRET-KEY-1"):
                ident = pyrage.x25519.Identity.from_str(line)
                identities.append(ident)
                recipients.append(ident.to_public())
            elif line.startswith("age1"):
                recipients.append(pyrage.x25519.Recipient.from_str(line))
            else:
                raise ValueError
        except (ValueError, pyrage.IdentityError, pyrage.RecipientError):
            raise KeyringError(
                f"line {number} of the encryption key is neither an age identity (AGE-SECRET-KEY-1...) "
                "nor an age recipient (age1...)"
            ) from None
    if not recipients:
        raise KeyringError("the encryption key holds no age identity or recipient")
    return Keyring(identities=tuple(identities), recipients=tuple(recipients))


def restore_key_problem(*, encryption: Any, key_text: str | None) -> tuple[Reason, str] | None:
    """Why the policy's key cannot decrypt a backup whose status/manifest says `encryption`, or
    None when it can (or the backup is not encrypted). Pure; messages never quote key material."""
    if not encryption:
        return None
    wanted = str(encryption.get("keyId"))
    if encryption.get("format") != ENCRYPTION_FORMAT:
        return Reason.DECRYPTION_FAILED, (
            f"the backup is encrypted as {encryption.get('format')!r}; only {ENCRYPTION_FORMAT} can be read"
        )
    if not key_text:
        return Reason.ENCRYPTION_KEY_MISSING, (
            f"the backup is encrypted (age, key id {wanted}) but the policy provides no encryption key "
            "(spec.backup.encryption.keySecretRef); nothing was restored"
        )
    try:
        ring = parse_keyring(key_text)
    except KeyringError as e:
        return Reason.ENCRYPTION_KEY_INVALID, f"{e}; nothing was restored"
    if ring.identity_for(wanted) is not None:
        return None
    if not ring.identities:
        return Reason.ENCRYPTION_KEY_MISSING, (
            f"the backup needs the age identity with key id {wanted}, but the key Secret holds only "
            "recipients (public keys); nothing was restored"
        )
    return Reason.DECRYPTION_FAILED, (
        f"the backup was encrypted with key id {wanted}; the key Secret holds key id(s) "
        f"{', '.join(ring.key_ids)} (wrong or rotated-out key); nothing was restored"
    )
