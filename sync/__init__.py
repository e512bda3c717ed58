"""rfmsync sync package."""
