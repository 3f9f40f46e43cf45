"""The real app from `diagnoxix.app.create_app`, plus one bench-only route for the service API.

Only the in-process service API scenario uses this script: a backend running inside the server
process calls `app[SERVICE]`, so something inside the process has to make those calls. Every
other scenario runs the unmodified server (`python run.py`). This route lives here, never in the
package.

    python -m bench.our_server --port P --db PATH      (settings otherwise from DIAGNOXIX_* as run.py)
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import NOTE_MESSAGE, NOTE_TITLE, NOTE_TYPE, burst_plan, note_data, raise_nofile
from diagnoxix.app import create_app, runner_options
from diagnoxix.config import default_settings
from diagnoxix.edge.server import serve
from diagnoxix.keys import SERVICE
from diagnoxix.logs import configure_logging
from diagnoxix.models import NotificationDraft
from diagnoxix.serving_tuning import tune_for_serving

PLAN = web.AppKey("bench.plan", list[tuple[str, dict[str, Any]]])
DRAFTS = web.AppKey("bench.drafts", list[NotificationDraft])
# What one `service.send` call carries in the batched mode: the HTTP batch endpoint's maximum.
SEND_CHUNK = 1000


async def prepare(request: web.Request) -> web.Response:
    spec = await request.json()
    plan = [(user, note_data(i)) for i, user in burst_plan(spec["users"], spec["count"])]
    request.app[PLAN] = plan
    request.app[DRAFTS] = [
        NotificationDraft(user_id=user, type=NOTE_TYPE, title=NOTE_TITLE, message=NOTE_MESSAGE, data=data)
        for user, data in plan
    ]
    return web.json_response({"prepared": len(request.app[PLAN])})


async def burst(request: web.Request) -> web.Response:
    """Send the prepared plan through the service API, as concurrent backend callers would.

    mode=send: `service.send(drafts)` in chunks of 1,000, all chunks concurrently.
    mode=typed: one `create_and_send_notification` call per notification, all concurrently.
    """
    service = request.app[SERVICE]
    plan = request.app[PLAN]
    mode = request.query.get("mode", "send")
    if mode == "typed":
        calls = [
            service.create_and_send_notification(user, NOTE_TYPE, NOTE_TITLE, NOTE_MESSAGE, data)
            for user, data in plan
        ]
        await asyncio.gather(*calls)
    else:
        drafts = request.app[DRAFTS]
        chunks = [drafts[i : i + SEND_CHUNK] for i in range(0, len(drafts), SEND_CHUNK)]
        await asyncio.gather(*(service.send(chunk) for chunk in chunks))
    return web.json_response({"sent": len(plan)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args()
    raise_nofile()
    settings = default_settings().with_overrides(port=args.port, db_path=args.db)
    configure_logging(settings.log_level, as_json=settings.log_json)
    app = create_app(settings)
    tune_for_serving(app)  # as `run.py` does
    app[PLAN] = []
    app[DRAFTS] = []
    app.router.add_post("/bench/prepare", prepare)
    app.router.add_post("/bench/burst", burst)
    serve(app, host=settings.host, port=settings.port, on_ready=lambda: None, **runner_options(settings))


if __name__ == "__main__":
    main()
