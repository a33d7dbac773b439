"""Metric and label names in PromQL expressions, checked against src/metrics.rs.

The catalogue comes from the string literals that name metrics in
src/metrics.rs. Each `"hallmark_..."` literal gives a name, the next
`&[...]` before the statement's `)?;` gives its labels, and a preceding
`HistogramOpts::new(` marks a histogram. The expression check is lexical, not a PromQL
parser: promtool parses the expressions, and this module catches names
that parse but do not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List

#: Labels that scraping adds to every series: Prometheus's job and instance,
#: and the Kubernetes labels that the PodMonitor and scrape.yml attach.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "endpoint", "service"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_LITERAL = re.compile(r'"(hallmark_[a-z0-9_]+)"')
_LABEL_LIST = re.compile(r"&\[([^\]]*)\]")
_METRIC_TOKEN = re.compile(r"\b(hallmark_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(hallmark_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class Metric:
    """One metric family as src/metrics.rs registers it."""

    name: str
    labels: FrozenSet[str]
    histogram: bool


def load_catalogue(metrics_rs: Path) -> Dict[str, Metric]:
    """Read the metric families of src/metrics.rs, keyed by every series name they expose."""
    source = metrics_rs.read_text(encoding="utf-8")
    catalogue: Dict[str, Metric] = {}
    for match in _LITERAL.finditer(source):
        statement = source[match.end() : source.find(")?;", match.end())]
        label_list = _LABEL_LIST.search(statement)
        labels = frozenset(re.findall(r'"([a-z_]+)"', label_list.group(1))) if label_list else frozenset()
        histogram = "HistogramOpts::new(" in source[max(0, match.start() - 80) : match.start()]
        metric = Metric(match.group(1), labels, histogram)
        catalogue[metric.name] = metric
        if histogram:
            for suffix in HISTOGRAM_SUFFIXES:
                catalogue[metric.name + suffix] = metric
    if not catalogue:
        raise ValueError(f"{metrics_rs}: no metric names found; has the registration code changed?")
    return catalogue


def expression_problems(expr: str, catalogue: Dict[str, Metric]) -> List[str]:
    """List unknown metric names and label names that an expression uses."""
    problems: List[str] = []
    unquoted = _QUOTED.sub('""', expr)
    used = set(_METRIC_TOKEN.findall(unquoted))
    for name in sorted(used - catalogue.keys()):
        problems.append(f"unknown metric {name}")

    known = [catalogue[name] for name in used if name in catalogue]
    for selector in _SELECTOR.finditer(expr):
        metric = catalogue.get(selector.group(1))
        if metric is None:
            continue
        allowed = _allowed_labels([metric], selector.group(1))
        for label in _MATCHER_LABEL.findall(_QUOTED.sub('""', selector.group(2))):
            if label not in allowed:
                problems.append(f"{selector.group(1)} has no label {label}")

    allowed_anywhere = _allowed_labels(known, "")
    for grouping in _GROUPING.finditer(unquoted):
        for label in filter(None, (part.strip() for part in grouping.group(1).split(","))):
            if label not in allowed_anywhere:
                problems.append(f"grouping by {label}, which none of {sorted(m.name for m in known)} has")
    return problems


def _allowed_labels(metrics: Iterable[Metric], series_name: str) -> FrozenSet[str]:
    labels = set(TARGET_LABELS)
    for metric in metrics:
        labels |= metric.labels
        if metric.histogram and (series_name in ("", metric.name + "_bucket")):
            labels.add("le")
    return frozenset(labels)
