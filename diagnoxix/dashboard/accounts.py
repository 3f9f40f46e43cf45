"""Staff accounts: Argon2id password hashes and sign-in throttling.

Hashing costs tens of milliseconds of CPU and 64 MiB on purpose, so it always runs in a worker
thread: a sign-in must never stall the event loop that delivers notifications.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from diagnoxix.models import utc_now
from diagnoxix.store.protocols import Store

# Staff usernames appear in the audit log and in URLs: a short, printable charset.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# NIST SP 800-63B: at least 8; we ask for 12 because these accounts see patient data.
MIN_PASSWORD_CHARS = 12
# Bounded so nobody can make us hash a megabyte per attempt.
MAX_PASSWORD_CHARS = 1024
ROLES = ("admin", "staff")


def check_new_credentials(username: str, password: str) -> str | None:
    """Why this username/password pair cannot be used, or None."""
    if not USERNAME_PATTERN.match(username):
        return "USERNAME must be 1-64 characters of letters, digits and . _ @ - (starting alphanumeric)"
    if len(password) < MIN_PASSWORD_CHARS:
        return f"the password must have at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"the password must have at most {MAX_PASSWORD_CHARS} characters"
    return None


class Passwords:
    """Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile), off the event loop."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check a password; for an unknown account (None) a decoy hash is checked instead, so
        the time taken does not tell which usernames exist."""
        if stored_hash is None:
            if self._decoy is None:
                self._decoy = await self.hash("decoy password for unknown accounts")
            stored_hash = self._decoy
            password = password + "\x00never matches"
        hasher = self._hasher

        def check(expected: str) -> bool:
            try:
                return hasher.verify(expected, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check, stored_hash)


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Failed sign-ins are counted per account from one address, and per address.

    After `per_account` failures for one account from one address within `window`, that address
    may not try that account again until the window has passed (429), right password or not; after
    `per_address` failures from one address, on any accounts, it may not try any. Nobody is locked
    out from elsewhere: a stranger guessing a nurse's password blocks only their own address, never
    the nurse at her ward's terminal. `per_address` is generous because a whole ward may sign in
    from behind one NAT address.
    """

    per_account: int = 5
    per_address: int = 30
    window: timedelta = timedelta(minutes=15)

    async def is_locked(self, store: Store, account_key: str, address_key: str) -> bool:
        since = utc_now() - self.window
        if await store.count_login_failures(account_key, since) >= self.per_account:
            return True
        return await store.count_login_failures(address_key, since) >= self.per_address

    @property
    def retry_after_seconds(self) -> int:
        return int(self.window.total_seconds())


async def create_account(
    store: Store, passwords: Passwords, username: str, password: str, role: str = "admin"
) -> bool:
    """False when the username is already taken."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    problem = check_new_credentials(username, password)
    if problem is not None:
        raise ValueError(problem)
    created = await store.create_staff_account(username, await passwords.hash(password), role)
    if created:
        store.record_audit("cli", "staff.create", username, {"role": role})
    return created
