"""The return path: bounces, complaints, auto-replies and mail unsubscribes, read by
reason and acted on (docs/feedback.md)."""
