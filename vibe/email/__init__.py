"""Email notifications: templates, the durable queue, the worker and its senders, the schedule,
Svix-signed delivery events, one-click unsubscribe, and the `email` command."""
