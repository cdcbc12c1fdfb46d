"""Media attached to events: uploads, checks, files, thumbnails, retention (docs/media.md)."""
