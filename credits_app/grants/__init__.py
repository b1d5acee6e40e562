"""The daily grant: +DAILY_GRANT_AMOUNT credits to every user once per UTC date.

Where each part lives:
- grants/runs.py: plan a date's run as user-id chunks, run a chunk, what is due (catch-up),
  the runs' records;
- grants/enqueue.py: the RQ jobs and the cron entry, by name, and how they are enqueued;
- ledger/grant.py: the credit itself, exactly once per (user, date), in the chunk's transaction;
- worker/jobs.py: the jobs the RQ worker runs; worker/schedule.py: the rq-scheduler process
  that fires the midnight tick;
- api/grants.py: GET /api/grants/daily, POST /api/grants/daily/run; cli/credits.py:
  `flask credits grant-daily`.
"""
from .enqueue import (CATCH_UP_JOB, CHUNK_FAILED_CALLBACK, CRON_ENTRY_ID, DAILY_TICK_JOB, GRANT_CHUNK_JOB,
                      GRANT_DATE_JOB, JOB_TIMEOUT, RedisUnavailable, enqueue_chunks, enqueue_date, queue, retry)
from .runs import (RUN_COLUMNS, Chunk, Run, check_requested_date, due_dates, get_run, mark_failed, parse_date,
                   pending_chunks, plan, recent_runs, run_chunk, run_date, start, utc_today)

__all__ = ["CATCH_UP_JOB", "CHUNK_FAILED_CALLBACK", "CRON_ENTRY_ID", "DAILY_TICK_JOB", "GRANT_CHUNK_JOB",
           "GRANT_DATE_JOB", "JOB_TIMEOUT", "RedisUnavailable", "enqueue_chunks", "enqueue_date", "queue", "retry",
           "RUN_COLUMNS", "Chunk", "Run", "check_requested_date", "due_dates", "get_run", "mark_failed",
           "parse_date", "pending_chunks", "plan", "recent_runs", "run_chunk", "run_date", "start", "utc_today"]
