"""Wires observability into one app: pricing, the metrics sink and ``/metrics``, the optional request log."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from gateway.accounting import Accountant
from gateway.decisions import RouteDecider
from gateway.pricing import PriceTable
from gateway.settings import Settings
from gateway.telemetry.metrics import GatewayMetrics, metrics_api
from gateway.telemetry.request_log import RequestLog

log = logging.getLogger("tiergate")


class Observability:
    """Pricing, the metrics sink and the request log of one app: its sinks go after those already on the
    accountant, so they see priced outcomes."""

    def __init__(self, settings: Settings, accountant: Accountant, decider: RouteDecider) -> None:
        self.prices = PriceTable.from_settings(settings)
        accountant.pricer = self.prices
        self.metrics = GatewayMetrics(decider, accountant)
        accountant.sinks.append(self.metrics)
        self.request_log: RequestLog | None = None
        cfg = settings.request_log
        if cfg.path:
            self.request_log = RequestLog(cfg.path, cfg.include_prompts, cfg.flush_interval_s)
            accountant.sinks.append(self.request_log)

    @property
    def api(self) -> APIRouter:
        return metrics_api(self.metrics)

    def start(self) -> None:
        if self.request_log is not None:
            self.request_log.start()
            log.info("request log: %s (prompts %s)", self.request_log.path,
                     "kept" if self.request_log.include_prompts else "not kept")

    def close(self) -> None:
        if self.request_log is not None:
            self.request_log.close()
