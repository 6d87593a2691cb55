"""Peewee models, the database binding and versioned migrations."""
