"""What requests about notifications may say, over HTTP and the WebSocket alike: seqs and cursors,
epochs, page sizes, lists of ids, request ids, idempotency keys, lifetimes, key names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from diagnoxix.models import Notification
from diagnoxix.rules.fields import Bounds
from diagnoxix.rules.notification import BATCH_ITEMS, is_utf8

# Seqs (and the dashboard's audit ids) are SQLite integers, signed 64-bit; a larger number is no
# seq, and binding it would overflow. 2**62 leaves the store decades of headroom below the edge.
MAX_SEQ = 2**62
# `since` is the last seq a client processed: 0 means "from the beginning".
SINCE_SEQ = Bounds(0, MAX_SEQ)
# A history cursor (`before`) is a seq that was on a page: the first seq is 1.
CURSOR_SEQ = Bounds(1, MAX_SEQ)

# An epoch names one database (a hex UUID today); 64 ASCII letters and digits leave room to change
# its form without letting a client send a document.
EPOCH_REGEX = r"^[A-Za-z0-9]{1,64}$"
_EPOCH = re.compile(EPOCH_REGEX)

# A device is named by its token's id (`jti`): 16 lowercase hex digits as minted. Checked before
# any lookup, so a path cannot carry anything else to the store or the audit log.
TOKEN_ID_REGEX = r"^[0-9a-f]{16}$"  # noqa: S105 - a pattern, not a secret
_TOKEN_ID = re.compile(TOKEN_ID_REGEX)
# A user's device list shows the newest this many live tokens: a screen's worth, one bounded read
# (a backend that mints a token per page view can leave hundreds alive).
MAX_DEVICES_LISTED = 100

# History pages, over HTTP and the socket: an inbox screen's worth. At most 100 because a reply of
# notifications of up to ~20 KB each must be held whole per connection while it is written; 200
# would let one request pin 4 MB.
HISTORY_PAGE = Bounds(1, 100)
DEFAULT_HISTORY_PAGE = 50

# Who is online, per request: a ward's dashboard wants everyone; 10,000 rows stay under a MB.
PRESENCE_PAGE = Bounds(1, 10_000)
DEFAULT_PRESENCE_PAGE = 1000

# Notification ids are UUIDs (36 characters); 64 allows another id form without allowing essays.
MAX_ID_CHARS = 64
# Printable ASCII without spaces, as every id we make is: no lone surrogate or other text that the
# database cannot even compare reaches a query.
ID_REGEX = f"^[!-~]{{1,{MAX_ID_CHARS}}}$"
_ID = re.compile(ID_REGEX)
# Ids marked read in one HTTP request: a whole batch, so a service can mark what it sent in one call.
READ_IDS = Bounds(1, BATCH_ITEMS.maximum)
# Ids in one WebSocket `ack` or `read` frame: 200 ids of 64 characters (about 13.4 KB of JSON) fit
# the 16 KiB a client frame may have (`ws_max_client_frame_bytes`), and a replay page is smaller.
FRAME_IDS = Bounds(1, 200)

# A WebSocket frame's `request_id` is echoed in the reply: a counter or a UUID, never a payload.
MAX_REQUEST_ID_CHARS = 64

# Idempotency keys are opaque client strings (usually UUIDs), 255 so they stay index-friendly.
# Visible ASCII and spaces (HTTP header values beyond ASCII are not portable), not blank: a
# header's surrounding spaces are dropped on the way in, and an empty key is no key.
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_KEY_REGEX = r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_REGEX)

# A broadcast reaches users who connect later until its ttl ends: at least a minute (shorter is no
# broadcast, just a live message) and at most ten years (the store's dates stay sane).
BROADCAST_TTL_SECONDS = Bounds(60, 10 * 365 * 24 * 3600)
# A connection token lives at least 10 s (time to open the socket with it); the most is the
# server's `token_max_ttl_seconds` setting, so a leaked token dies soon.
MIN_TOKEN_TTL_SECONDS = 10

# An API key's name says who uses it ("appointments service"); a line in a table.
MAX_API_KEY_NAME_CHARS = 100


def is_valid_api_key_name(name: str) -> bool:
    """1-MAX_API_KEY_NAME_CHARS printable characters: no NUL or other control character
    (PostgreSQL cannot store NUL) and no lone surrogate (UTF-8 cannot carry it)."""
    return 0 < len(name) <= MAX_API_KEY_NAME_CHARS and name.isprintable()


def token_ttl_seconds(max_ttl: int) -> Bounds:
    return Bounds(MIN_TOKEN_TTL_SECONDS, max_ttl)


def is_valid_epoch(value: object) -> bool:
    return isinstance(value, str) and _EPOCH.fullmatch(value) is not None


def is_valid_token_id(value: object) -> bool:
    return isinstance(value, str) and _TOKEN_ID.fullmatch(value) is not None


def is_valid_idempotency_key(value: str) -> bool:
    return len(value) <= MAX_IDEMPOTENCY_KEY_CHARS and _IDEMPOTENCY_KEY.fullmatch(value) is not None


def ids_problem(value: object, count: Bounds) -> str | None:
    """A list of `count` notification ids (`ID_REGEX`), or the problem."""
    if (
        not isinstance(value, list)
        or not count.minimum <= len(value) <= count.maximum
        or not all(isinstance(i, str) and _ID.fullmatch(i) for i in value)
    ):
        return f"must be a list of {count.minimum}-{count.maximum} notification ids"
    return None


def request_id(value: object) -> str | None:
    """A frame's `request_id` worth echoing, or None (an odd one is ignored, not an error): one
    holding a lone surrogate (`"\\ud800"` is valid JSON) could not be sent back."""
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS and is_utf8(value):
        return value
    return None


def next_cursor(page: Sequence[Notification], limit: int) -> int | None:
    """The `before` of the next page: the last seq of a full page, or None (no more pages).

    One definition for HTTP and the socket: an integer seq, or null.
    """
    return page[-1].seq if page and len(page) == limit else None
