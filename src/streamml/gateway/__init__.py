"""The HTTP edge: endpoints, the submission service, body parsing, auth and rate limit, error mapping."""
