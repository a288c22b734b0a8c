"""Durable schedules (DESIGN §12): cron expressions in a time zone and fixed intervals, each
firing one invocation with the idempotency key ``schedule:{name}:{fire time}``."""
