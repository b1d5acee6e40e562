"""`python -m worker`: an RQ worker on the project's queue (RQ_QUEUE), with TZ=UTC;
`python -m worker --queue webhooks`: one on WEBHOOKS_QUEUE, for the webhooks dispatcher and
the events prune, so that slow receivers never hold the daily grant's worker.

The app is built once here, in the parent; rq forks a work horse per job, and each horse
drops the inherited connection pool before its first query (worker.jobs._context).
On RQ_QUEUE, RQ's own scheduler runs beside it (`with_scheduler`) so delayed retries are
re-queued; the webhooks jobs are never retried by RQ (the next cron fire runs them again).

A warm shutdown (the first SIGTERM or Ctrl-C) lets the running job finish, as RQ's does, and
also tells it (jobs.STOP_SIGNAL): the webhooks dispatcher, which otherwise runs for most of a
minute, then ends its run, so a deploy or a `make run` stop does not wait for it.
"""
import argparse
import os
import signal
import sys
import time

os.environ["TZ"] = "UTC"
time.tzset()


QUEUES = {"grant": "RQ_QUEUE", "webhooks": "WEBHOOKS_QUEUE"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--queue", choices=sorted(QUEUES), default="grant",
                        help="grant: RQ_QUEUE (the default); webhooks: WEBHOOKS_QUEUE")
    which = parser.parse_args(argv).queue
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from rq import Queue, Worker

    from worker import jobs

    class StoppingWorker(Worker):
        def setup_work_horse_signals(self):
            super().setup_work_horse_signals()
            signal.signal(jobs.STOP_SIGNAL, signal.SIG_IGN)  # until a job that can end early handles it

        def handle_warm_shutdown_request(self):
            super().handle_warm_shutdown_request()
            if self.horse_pid:
                self.kill_horse(sig=jobs.STOP_SIGNAL)

    config = jobs.preload().config
    if not config["REDIS_URL"]:
        sys.exit("REDIS_URL is not set: the worker needs Redis")
    connection = Redis.from_url(config["REDIS_URL"])
    # Redis down at start must not end the process (a supervisor such as honcho would take
    # the whole stack down with it): wait for it. Once working, rq rides out outages itself.
    while True:
        try:
            StoppingWorker([Queue(config[QUEUES[which]], connection=connection)], connection=connection,
                           work_horse_killed_handler=jobs.horse_killed).work(with_scheduler=which == "grant")
            return
        except (RedisConnectionError, RedisTimeoutError) as e:
            print(f"redis unavailable ({e}); starting again in 2 s", file=sys.stderr, flush=True)
            time.sleep(2)


if __name__ == "__main__":
    main()
