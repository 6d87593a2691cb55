"""The operator panel: a Flask app with Flask-Admin views and JSON endpoints."""
