"""The hands: Celery app and tasks, ZFS backends, data plane, object store."""
