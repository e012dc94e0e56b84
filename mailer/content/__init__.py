"""Content: templates, inlining, text parts, message composition and DKIM signing."""
