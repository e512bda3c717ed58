"""rfmsync segmentation package."""
