# custom-criminalip: Criminal IP enrichment for Wazuh 4.x. `make help` lists the targets.
WAZUH_HOME ?= /var/ossec
DESTDIR ?=
WAZUH_PYTHON := $(WAZUH_HOME)/framework/python/bin/python3
PYTHON ?= $(shell test -x $(WAZUH_PYTHON) && echo $(WAZUH_PYTHON) || command -v python3)
VERSION := $(shell sed -n "s/^VERSION = '\(.*\)'/\1/p" custom-criminalip)
DIST_NAME := custom-criminalip-$(VERSION)
DIST_FILES := custom-criminalip criminal_ip_ruleset.xml ossec.conf.snippet selftest.py Makefile \
	LICENSE README.md tools/install.py tools/check_all_pythons.py tools/bench.py \
	tests/criminal_ip.ini tests/samples tests/tls

.PHONY: help check test selftest bench install uninstall dist clean

help:
	@echo "make check      run the test suite under every CPython 3.8-3.13 found"
	@echo "make test       run the test suite once, with $(PYTHON)"
	@echo "make selftest   ./custom-criminalip --selftest (no network, no API key)"
	@echo "make bench      cache-hit cost, cache-size scaling and credits spent on a burst"
	@echo "make install    install into $(DESTDIR)$(WAZUH_HOME) (CRIMINALIP_API_KEY=... also configures ossec.conf)"
	@echo "make uninstall  undo exactly what make install did"
	@echo "make dist       dist/$(DIST_NAME).tar.gz and dist/SHA256SUMS"

check:
	@python3 tools/check_all_pythons.py

test:
	$(PYTHON) selftest.py

selftest:
	$(PYTHON) custom-criminalip --selftest

bench:
	@python3 tools/bench.py

install:
	@echo "Installing custom-criminalip $(VERSION) into $(DESTDIR)$(WAZUH_HOME)"
	@$(PYTHON) tools/install.py install --wazuh-home "$(WAZUH_HOME)" --destdir "$(DESTDIR)"
	@echo "Running the installed self-test:"
	@$(PYTHON) "$(DESTDIR)$(WAZUH_HOME)/integrations/custom-criminalip" --selftest
	@echo "Done. Apply it with: systemctl restart wazuh-manager"

uninstall:
	@$(PYTHON) tools/install.py uninstall --wazuh-home "$(WAZUH_HOME)" --destdir "$(DESTDIR)"
	@echo "Done. Apply it with: systemctl restart wazuh-manager"

dist:
	@rm -rf dist/$(DIST_NAME) && mkdir -p dist/$(DIST_NAME)
	@tar cf - $(DIST_FILES) | tar xf - -C dist/$(DIST_NAME)
	@cd dist/$(DIST_NAME) && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | xargs sha256sum > SHA256SUMS
	@cd dist && tar --owner=0 --group=0 --sort=name -czf $(DIST_NAME).tar.gz $(DIST_NAME) && rm -rf $(DIST_NAME)
	@cd dist && sha256sum $(DIST_NAME).tar.gz > SHA256SUMS
	@echo "dist/$(DIST_NAME).tar.gz"; cat dist/SHA256SUMS

clean:
	rm -rf dist tests/__pycache__ __pycache__
