"""Campaign delivery: campaigns, the outbox, transports, rate limits, the sender."""
