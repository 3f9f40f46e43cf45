"""The settings of the edge (docs/security.md): how many connections one client address may
hold, how long a client has to send a request and to read what it is sent, the request rates,
and how the sockets' queues and heartbeats bound a client; their entries of
`config.ENV_SETTINGS`, kept here so the settings module stays one table of the rest."""

from __future__ import annotations

from diagnoxix.env_text import Parser, seconds, whole

EDGE_ENV_SETTINGS: tuple[tuple[str, str, Parser, str], ...] = (
    (
        "DIAGNOXIX_MAX_CONNECTIONS_PER_ADDRESS",
        "max_connections_per_address",
        whole(1, 1_000_000),
        "open connections (sockets and HTTP) from one client address; one more is answered 429 and"
        " closed. A whole ward may share one NAT address",
    ),
    (
        "DIAGNOXIX_HTTP_HEADER_TIMEOUT",
        "http_header_timeout_seconds",
        seconds(1.0),
        "seconds a connection has to send a request's head, and again its body (one that trickles"
        " in is let go; a body, with 408); also how long an idle keep-alive connection stays open",
    ),
    (
        "DIAGNOXIX_HTTP_WRITE_TIMEOUT",
        "http_write_timeout_seconds",
        seconds(1.0),
        "seconds a client may leave what the server wrote unread (its buffer full the whole time)"
        " before the connection is dropped: a response it never reads is not held longer (a socket"
        " or an SSE stream: whichever of this and `DIAGNOXIX_WS_WRITE_TIMEOUT` ends first)",
    ),
    (
        "DIAGNOXIX_RATE_LIMIT",
        "http_requests_per_second_per_address",
        whole(0, 1_000_000),
        "API requests (and socket handshakes) per second from one client address without an API key;"
        " past it, 429 with `Retry-After` (`0`: no limit). Services with an API key are not limited"
        " by address",
    ),
    (
        "DIAGNOXIX_AUTH_FAILURE_LIMIT",
        "auth_failures_per_minute_per_address",
        whole(0, 1_000_000),
        "answers of 401 per minute to one client address; past it the address may present no"
        " credentials until the minute has passed (429; `0`: no limit)",
    ),
    (
        "DIAGNOXIX_API_KEY_RATE_LIMIT",
        "api_key_requests_per_second",
        whole(0, 1_000_000),
        "requests per second with one API key; past it, 429 with `Retry-After` (`0`: no limit)",
    ),
    (
        "DIAGNOXIX_WS_HEARTBEAT",
        "ws_heartbeat_seconds",
        seconds(1.0),
        "seconds between WebSocket pings; a peer that misses a pong for half of it is closed",
    ),
    (
        "DIAGNOXIX_WS_SEND_QUEUE",
        "ws_send_queue_limit",
        whole(1, 1_000_000),
        "frames a connection may have waiting before it is closed with 1013 (it resumes from the store)",
    ),
    (
        "DIAGNOXIX_WS_SEND_QUEUE_BYTES",
        "ws_send_queue_bytes",
        whole(64 * 1024, 1024**3),
        "bytes a connection may have waiting (history replies included; one frame always fits) before"
        " it is closed with 1013",
    ),
    (
        "DIAGNOXIX_WS_WRITE_TIMEOUT",
        "ws_write_timeout_seconds",
        seconds(1.0),
        "seconds one frame may take to reach a client before the connection is dropped (it stopped reading)",
    ),
    (
        "DIAGNOXIX_SSE_HEARTBEAT",
        "sse_heartbeat_seconds",
        seconds(1.0),
        "seconds between comment lines on an idle SSE stream, below every proxy's read timeout",
    ),
)
