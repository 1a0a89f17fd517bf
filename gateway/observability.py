"""Wires observability into one app: pricing, the metrics sink and ``/metrics``, the optional request log."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from gateway.metrics import GatewayMetrics, metrics_api
from gateway.pricing import PriceTable
from gateway.request_log import RequestLog
from gateway.state import GatewayState

log = logging.getLogger("tiergate")


class Observability:
    """What ``create_app`` adds to a state: its sinks go after any injected ones, so they see priced outcomes."""

    def __init__(self, state: GatewayState) -> None:
        settings = state.settings
        self.prices = PriceTable.from_settings(settings)
        state.accountant.pricer = self.prices
        self.metrics = GatewayMetrics(state.service, state.accountant)
        state.accountant.sinks.append(self.metrics)
        self.request_log: RequestLog | None = None
        cfg = settings.request_log
        if cfg.path:
            self.request_log = RequestLog(cfg.path, cfg.include_prompts, cfg.flush_interval_s)
            state.accountant.sinks.append(self.request_log)

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
