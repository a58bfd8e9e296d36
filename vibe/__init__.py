"""vibe: the back end of the Vibe Coding Bible (Stripe billing, users, analytics, email)."""

__version__ = "0.1.0"
