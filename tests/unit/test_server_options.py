"""The gunicorn settings `serve` uses: buffering workers, recycled now and then."""

from __future__ import annotations

from gunicorn.config import Config

from provider.http_buffering import BufferingWorker
from provider.server import gunicorn_options
from provider.settings import Settings


def test_workers_buffer_requests_and_are_recycled_with_jitter() -> None:
    options = gunicorn_options(Settings.from_mapping({}), bind="127.0.0.1:8080", workers=2, threads=4)
    cfg = Config()
    for key, value in options.items():
        cfg.set(key, value)
    assert cfg.worker_class is BufferingWorker
    assert cfg.max_requests > 0
    assert 0 < cfg.max_requests_jitter < cfg.max_requests
    # Room for slow clients beside the threads (they wait in the event loop, not a thread).
    assert cfg.worker_connections >= 16 * cfg.threads
