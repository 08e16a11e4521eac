"""The image-to-image mode: upload validation, its form, API endpoint and batch command."""
