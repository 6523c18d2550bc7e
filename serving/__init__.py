"""Serving: inference bundles (bundle.py), predictions (predict.py), the web app (app.py),
request limits (limits.py), the feedback store (feedback.py) and the page (static/)."""
