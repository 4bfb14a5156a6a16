"""Registers the registry models with django-auditlog (filled in with the models)."""
