"""Gunicorn settings for the web process (read automatically from the working directory)."""

import os

bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# Twilio gives up on a webhook after 15 s; a stuck worker must be replaced before that.
timeout = 14
graceful_timeout = 10
accesslog = "-"
# Paths and status only: our URLs carry no personal data, and query strings are menu state.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
