"""`python -m worker`: an RQ worker on the project's queue, with TZ=UTC."""
import os
import sys

os.environ["TZ"] = "UTC"


def main():
    from redis import Redis
    from rq import Queue, Worker

    url = os.environ.get("REDIS_URL")
    if not url:
        sys.exit("REDIS_URL is not set: the worker needs Redis")
    connection = Redis.from_url(url)
    Worker([Queue(os.environ.get("RQ_QUEUE", "credits"), connection=connection)], connection=connection).work()


if __name__ == "__main__":
    main()
