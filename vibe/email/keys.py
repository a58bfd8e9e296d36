"""Email's state: the renderer, the queue's group committer, the worker, the scheduler, the
unsubscribe links and the pages' template environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

if TYPE_CHECKING:  # the types the keys name as strings (ruff cannot see those uses)
    from vibe.db.groupcommit import GroupCommitter  # noqa: F401
    from vibe.email.schedule import EmailScheduler  # noqa: F401
    from vibe.email.templates import EmailRenderer  # noqa: F401
    from vibe.email.unsubscribe import UnsubscribeLinks  # noqa: F401
    from vibe.email.worker import EmailWorker  # noqa: F401

EMAIL_RENDERER = web.AppKey("email_renderer", "EmailRenderer")
EMAIL_QUEUE = web.AppKey("email_queue", "GroupCommitter")
EMAIL_WORKER = web.AppKey("email_worker", "EmailWorker")
EMAIL_SCHEDULER = web.AppKey("email_scheduler", "EmailScheduler")
EMAIL_UNSUBSCRIBE = web.AppKey("email_unsubscribe", "UnsubscribeLinks")
EMAIL_PAGES = web.AppKey("email_pages", jinja2.Environment)  # aiohttp-jinja2 environment for templates/pages
