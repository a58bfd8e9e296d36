"""vibe: the back end of the Vibe Coding Bible (Stripe billing, users, analytics, email).

One subpackage per concern; docs/architecture.md is the map.
"""

from vibe import deprecated

__version__ = "0.3.0"

deprecated.install()  # the flat layout's import paths, for one more release
