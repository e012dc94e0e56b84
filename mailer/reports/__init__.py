"""Reports: a campaign's figures, and one self-contained HTML page of them."""
