"""rfmsync connectors package."""
