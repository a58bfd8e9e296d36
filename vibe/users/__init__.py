"""User management: the route and its actions, sessions, tokens, access rules, learning progress,
caches and their cross-instance sync, and the `users` command."""
