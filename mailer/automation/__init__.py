"""What the engine sends by itself, on a schedule: recurring campaigns (`recurring`)."""
