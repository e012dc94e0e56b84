"""Privacy and data care (AVG/GDPR): export, erasure, retention, audit trail, breach
register, backups (docs/privacy.md)."""
