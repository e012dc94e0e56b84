"""The subscribers' side: pages and endpoints served by `mailer serve`."""
