"""The web layer: the app factory, middlewares, rate limiting, errors, validation, the OpenAPI
document, serving and bounded shutdown."""
