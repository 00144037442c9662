"""The web UI: overview, service detail, incidents, service editing, users, and the public status page."""
