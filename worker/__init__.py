"""The RQ side of the service: job functions (jobs), the daily grant's cron entry and the
scheduler process (schedule), and the worker entry point (`python -m worker`)."""
