"""The REST API (FastAPI): routers by resource, dependencies, schemas, errors, metrics.

The application itself is built by :func:`cloud.app.create_app`.
"""
