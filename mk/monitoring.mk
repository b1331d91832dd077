# Prometheus alerting rules and the Grafana dashboard (deploy/monitoring/). promtool and
# prometheus come from Debian's prometheus package (`make promtool`, mk/feed.mk); the e2e
# test `prometheus` runs the real server.

MONITORING_DIR := deploy/monitoring

.PHONY: monitoring-check
monitoring-check: promtool ## check the alerting rules, run their unit tests (promtool test rules), check the dashboard is JSON
	$(PROMTOOL) check rules $(MONITORING_DIR)/certgate-alerts.yaml
	cd $(MONITORING_DIR) && $(PROMTOOL) test rules certgate-alerts.test.yaml
	python3 -m json.tool $(MONITORING_DIR)/certgate-dashboard.json > /dev/null

.PHONY: prometheus
prometheus: promtool ## the Prometheus server the e2e test `prometheus` runs (Debian prometheus, as promtool)
	@scripts/apt-install.sh --no-install-recommends prometheus prometheus

test: monitoring-check
e2e: prometheus
