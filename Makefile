# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The browser tests drive Debian's Chromium: Playwright's own browser download cannot work here.
CHROMIUM := /usr/bin/chromium
# The return-path tests run Debian's dovecot as their real IMAP and POP3 server
# (tests/support/mailserver.py starts it unprivileged on loopback; no system service is used).
DOVECOT := /usr/lib/dovecot/imap /usr/lib/dovecot/pop3
DOVECOT_PACKAGES := dovecot-imapd dovecot-pop3d
# The doctor's tests serve their DNS zone with Debian's dnsmasq (tests/support/dnsserver.py
# starts it unprivileged on a loopback port; no system service is used).
DNSMASQ := /usr/sbin/dnsmasq
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Only the tests need them (order-only: installed when missing, never a reason to rebuild).
# CI runs as root and installs it (updating apt's lists only if the install fails); anyone
# else is asked to.
$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] || { echo "$(CHROMIUM) is missing: install the Debian package chromium" >&2; exit 1; }
	$(APT_INSTALL) chromium || { apt-get update && $(APT_INSTALL) chromium; }

$(DOVECOT) &:
	@[ "$$(id -u)" = 0 ] || { echo "dovecot is missing: install the Debian packages $(DOVECOT_PACKAGES)" >&2; exit 1; }
	$(APT_INSTALL) $(DOVECOT_PACKAGES) || { apt-get update && $(APT_INSTALL) $(DOVECOT_PACKAGES); }

$(DNSMASQ):
	@[ "$$(id -u)" = 0 ] || { echo "$(DNSMASQ) is missing: install the Debian package dnsmasq-base" >&2; exit 1; }
	$(APT_INSTALL) dnsmasq-base || { apt-get update && $(APT_INSTALL) dnsmasq-base; }

demo: $(STAMP)
	$(BIN)/python -m mailer.demo

test: $(STAMP) | $(CHROMIUM) $(DOVECOT) $(DNSMASQ)
	$(BIN)/ruff check mailer tests bench
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/import_bench.py --postgres

clean:
	rm -rf $(VENV) demo
