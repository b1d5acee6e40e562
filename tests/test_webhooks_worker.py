"""The webhooks worker with real processes against PostgreSQL, a real redis-server and a real
receiver on the loopback: `python -m worker --queue webhooks` SIGKILLed mid-delivery, Redis
flushed while deliveries are pending, the cron entries fired by `rqscheduler` into the
webhooks queue (never the grant's). Every wait polls for an outcome."""
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import psutil
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq_scheduler import Scheduler
from standardwebhooks import Webhook

from tests.redis_fixtures import QUEUE, ROOT, db_url, wait_for
from tests.test_webhooks_delivery import SETTINGS, add_endpoint, attempts, deliveries, emit, statuses
from tests.webhook_receiver import Receiver
from worker import schedule

LEASE = int(SETTINGS["WEBHOOKS_LEASE_SECONDS"])


@pytest.fixture
def app_env(redis_url):
    return {**SETTINGS, "REDIS_URL": redis_url, "RQ_QUEUE": QUEUE}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def kill(proc):
    """SIGKILL a worker and its work horse, as a crash or an OOM kill would."""
    try:
        horses = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        horses = []
    for horse in horses:
        horse.kill()
    proc.kill()
    proc.wait()


@pytest.fixture
def webhooks_worker(pg, rq_processes):
    """Start `python -m worker --queue webhooks`; each is killed with its horse at the end (a
    dispatcher run lasts a minute, longer than a warm shutdown waits)."""
    started = []

    def start():
        proc = rq_processes._start("webhooks-worker", [sys.executable, "-m", "worker", "--queue", "webhooks"],
                                   rq_processes.env(db_url(pg), **SETTINGS))
        started.append(proc)
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            kill(proc)


def webhooks_queue(pg):
    return Queue(pg.config["WEBHOOKS_QUEUE"], connection=Redis.from_url(pg.config["REDIS_URL"]))


def test_a_worker_killed_mid_delivery_leaves_it_due_after_its_lease_with_its_one_id(pg, webhooks_worker, receiver):
    _, secret = add_endpoint(receiver.url)
    (event,) = emit()
    receiver.mode = "hang"
    worker = webhooks_worker()
    webhooks_queue(pg).enqueue(schedule.DISPATCH, kwargs={"seconds": 30})
    wait_for(receiver.received, "the send to begin")
    kill(worker)  # mid-delivery: the receiver holds the request, unanswered
    (row,) = deliveries()
    assert (row.status, row.attempts) == ("pending", 0)  # nothing recorded; the claim's lease holds it

    receiver.mode = "ok"
    receiver.release()
    webhooks_worker()
    webhooks_queue(pg).enqueue(schedule.DISPATCH, kwargs={"seconds": 30})
    wait_for(lambda: statuses() == ["delivered"], "the delivery once the lease ran out")
    first, second = receiver.received()
    assert (first.msg_id, second.msg_id) == (f"evt_{event}", f"evt_{event}")
    assert Webhook(secret).verify(second.body, second.headers)["id"] == f"evt_{event}"
    # Not sent again while the killed worker's lease held it (the lease began before the first send).
    assert second.at - first.at >= LEASE - 0.5
    assert [a.status_code for a in attempts(row.id)] == [200]


def test_deliveries_pending_through_a_redis_flush_are_delivered_when_the_scheduler_is_back(
        pg, rq_processes, webhooks_worker, receiver):
    """Injected: FLUSHALL while deliveries are pending and the scheduler runs (no worker yet).
    Observed: the scheduler registers its entries again and queues a dispatcher run; the
    worker then delivers every event, once, with its id; nothing was lost with Redis."""
    _, secret = add_endpoint(receiver.url)
    events = emit(5)
    redis = Redis.from_url(pg.config["REDIS_URL"])
    scheduler, queue = Scheduler(connection=redis), webhooks_queue(pg)

    def entries():
        return {job.id: job for job in scheduler.get_jobs()}

    rq_processes.scheduler(db_url(pg), **SETTINGS)
    wait_for(lambda: set(schedule.ENTRY_IDS) <= set(entries()), "the cron entries")
    wait_for(lambda: schedule.DISPATCH_NOW_JOB_ID in queue.job_ids, "a dispatcher run to be queued")
    redis.flushall()
    wait_for(lambda: set(schedule.ENTRY_IDS) <= set(entries()), "the cron entries to be registered again")
    wait_for(lambda: schedule.DISPATCH_NOW_JOB_ID in queue.job_ids, "a dispatcher run to be queued again")
    dispatch, prune = entries()[schedule.DISPATCH_JOB_ID], entries()[schedule.PRUNE_JOB_ID]
    assert (dispatch.func_name, dispatch.origin, dispatch.meta["cron_string"]) == (
        schedule.DISPATCH, pg.config["WEBHOOKS_QUEUE"], pg.config["WEBHOOKS_DISPATCH_CRON"])
    assert (prune.func_name, prune.origin, prune.meta["cron_string"]) == (
        schedule.PRUNE, pg.config["WEBHOOKS_QUEUE"], pg.config["EVENTS_PRUNE_CRON"])
    assert statuses() == ["pending"] * 5

    webhooks_worker()
    wait_for(lambda: statuses() == ["delivered"] * 5, "every delivery")
    assert sorted(receiver.ids()) == sorted(f"evt_{e}" for e in events)
    for request in receiver.received():
        Webhook(secret).verify(request.body, request.headers)


def burst(rq_processes, pg, *cmd):
    result = subprocess.run([sys.executable, "-m", *cmd, "--burst", "--url", rq_processes.redis_url], cwd=ROOT,
                            env=rq_processes.env(db_url(pg), **SETTINGS), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_cron_entries_fire_into_the_webhooks_queue_and_the_prune_job_runs_there(pg, rq_processes):
    redis = Redis.from_url(pg.config["REDIS_URL"])
    name = pg.config["WEBHOOKS_QUEUE"]
    for register in (schedule.register_dispatch, schedule.register_prune):
        job, changed = register(redis, "* * * * *", name)
        assert changed and register(redis, "* * * * *", name)[1] is False  # registering again keeps one
        Scheduler(connection=redis).change_execution_time(job, datetime.now(timezone.utc) - timedelta(seconds=1))
    burst(rq_processes, pg, "rq_scheduler.scripts.rqscheduler")
    assert sorted(Queue(name, connection=redis).job_ids) == sorted([schedule.DISPATCH_JOB_ID, schedule.PRUNE_JOB_ID])
    assert Queue(QUEUE, connection=redis).job_ids == []  # never the grant's queue
    Queue(name, connection=redis).remove(schedule.DISPATCH_JOB_ID)  # a run lasts a minute: not here
    burst(rq_processes, pg, "rq.cli", "worker", name)
    pruned = Job.fetch(schedule.PRUNE_JOB_ID, connection=redis).return_value()
    assert pruned == {"deliveries": 0, "undelivered": 0, "events": 0}


def _stopped_within(proc, seconds):
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_a_warm_shutdown_ends_a_dispatcher_run_early_and_it_finishes_cleanly(pg, webhooks_worker, receiver):
    """SIGTERM (a deploy, Ctrl-C under `make run`) lets the running job finish, as RQ's warm
    shutdown does, and tells the dispatcher, which ends its run at once instead of after
    the rest of its minute: the worker is gone in seconds and the job counts as finished."""
    worker = webhooks_worker()
    job = webhooks_queue(pg).enqueue(schedule.DISPATCH, kwargs={"seconds": 300})
    wait_for(lambda: job.get_status(refresh=True) == "started", "the dispatcher run to start")
    worker.terminate()
    assert _stopped_within(worker, 30), "the worker waited out the dispatcher's run"
    assert job.get_status(refresh=True) == "finished"
    assert isinstance(job.return_value(), dict)  # the run's counts


def test_a_warm_shutdown_lets_any_other_job_finish_its_work(pg, webhooks_worker):
    """The same signal reaches a job that cannot end early (here a plain sleep): it ignores it
    and finishes, and only then does the worker stop."""
    worker = webhooks_worker()
    job = webhooks_queue(pg).enqueue("time.sleep", 4)
    wait_for(lambda: job.get_status(refresh=True) == "started", "the job to start")
    worker.terminate()
    assert _stopped_within(worker, 60)
    assert job.get_status(refresh=True) == "finished"
