"""A small client of Prometheus's HTTP API (instant and range queries, nothing else), and of a
/metrics endpoint read directly: its text format scraped into samples, and their sums."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rig import procs

# One scrape: (metric name, sorted label pairs) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class PrometheusUnreachable(RuntimeError):
    """The URL did not answer like a Prometheus HTTP API."""


class QueryError(RuntimeError):
    """Prometheus answered, but rejected the query (bad PromQL, too many points, ...)."""


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)  # (unix time, value); NaN kept

    @property
    def has_data(self) -> bool:
        return any(not math.isnan(v) for _, v in self.points)


class Prometheus:
    def __init__(self, url: str, timeout: float = 20.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, params: dict[str, str]) -> Any:
        # Queries go as POST (long PromQL); the status endpoints answer GET only.
        if params:
            req = urllib.request.Request(
                f"{self.url}{path}", data=urllib.parse.urlencode(params).encode(), method="POST"
            )
        else:
            req = urllib.request.Request(f"{self.url}{path}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.load(resp)
        except urllib.error.HTTPError as e:  # 400/422/503 carry {"status": "error", ...}
            try:
                answer = json.load(e)
            except ValueError:
                raise PrometheusUnreachable(f"Prometheus at {self.url}: HTTP {e.code} on {path}") from e
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise PrometheusUnreachable(f"Prometheus at {self.url} did not answer ({e})") from e
        if not isinstance(answer, dict) or "status" not in answer:
            raise PrometheusUnreachable(f"{self.url}{path} did not answer like a Prometheus API")
        if answer["status"] != "success":
            raise QueryError(
                f"{answer.get('errorType')}: {answer.get('error')} (query {params.get('query')!r})"
            )
        return answer["data"]

    def config(self) -> str:
        """The running configuration, as YAML text."""
        return str(self._call("/api/v1/status/config", {}).get("yaml", ""))

    def check(self) -> None:
        """Raise PrometheusUnreachable unless the URL is a Prometheus that answers queries."""
        self._call("/api/v1/query", {"query": "1"})

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        data = self._call("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data.get("result") or []]

    def query_range(self, expr: str, t0: float, t1: float, step: float) -> list[Series]:
        data = self._call(
            "/api/v1/query_range",
            {"query": expr, "start": f"{t0:.3f}", "end": f"{t1:.3f}", "step": f"{step:g}"},
        )
        return [
            Series(s["metric"], [(float(t), float(v)) for t, v in s.get("values") or []])
            for s in data.get("result") or []
        ]

    def counter_delta(self, metric: str, t0: float, t1: float, by: str | None = None) -> dict[str, float]:
        """How much a counter grew over [t0, t1], from its last value at both ends (exact; no
        extrapolation as increase() does).

        The last value is max_over_time over the run's length: a target that is gone at the end
        (the headless Locust master exits with the run) is stale at t1 for an instant query, but
        its samples are still in the range. Workers restarted by a fault keep their counts (their
        multiproc folder), so a counter never resets inside a run."""
        group = f" by ({by})" if by else ""
        w = f"{max(1, round(t1 - t0))}s"
        out: dict[str, float] = {}
        for at, sign in ((t1, 1.0), (t0, -1.0)):
            for labels, v in self.query(f"sum{group} (max_over_time({metric}[{w}]))", at):
                key = labels.get(by, "") if by else ""
                out[key] = out.get(key, 0.0) + sign * v
        return out


# --- /metrics read directly ------------------------------------------------------------------------------


def samples_of(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in families for s in fam.samples}


def parse_metrics(text: str) -> Samples:
    return samples_of(text_string_to_metric_families(text))


def scrape(url: str, timeout: float = 5.0) -> Samples:
    got = procs.http_get(url, timeout=timeout)
    if got is None or got[0] != 200:
        raise OSError(f"{url} did not answer")
    return parse_metrics(got[1].decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, lv), v in samples.items()
               if n == name and all(dict(lv).get(k) == want for k, want in labels.items()))
