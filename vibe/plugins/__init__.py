"""The plugin host: the hookspecs, the plugin manager, and the unit-of-work context hooks are
given."""
