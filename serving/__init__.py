"""Serving: inference bundles (bundle.py), predictions (predict.py, over ``models/inference.py``),
the web app (app.py, schemas.py), request limits (limits.py), the feedback store (feedback.py) and
the page (static/). Imports nothing of the project but ``models/``."""
