"""The RQ worker process. The daily-grant job and its schedule arrive with their own issue;
until then the worker only serves the queue so the Procfile's process set is complete."""
