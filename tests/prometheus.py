"""Prometheus text exposition read strictly, for the tests of GET /metrics."""

from __future__ import annotations

import re

import httpx

_SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{(?:[a-z_]+="[^"\\\n]*",?)*\})? (\S+)$')


def parse(text: str) -> dict[str, float]:
    """Every sample by its name and labels as written (`name{a="1",b="2"}`); every line must be
    a HELP, a TYPE or a sample, every family typed once before its samples."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert name not in typed and kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            continue
        m = _SAMPLE.match(line)
        assert m is not None, f"not a sample: {line!r}"
        family = re.sub(r"_(bucket|count|sum)$", "", m.group(1))
        assert m.group(1) in typed or family in typed, f"untyped: {line!r}"
        key = m.group(1) + (m.group(2) or "")
        assert key not in samples, f"twice: {key}"
        samples[key] = float(m.group(3))
    return samples


def scrape(url: str) -> tuple[dict[str, float], str]:
    """One scrape on a new connection (so that with several workers any may answer): the
    samples and the answering process's request id prefix."""
    r = httpx.get(url + "/metrics", timeout=10)
    kind = r.headers.get("content-type", "")
    assert r.status_code == 200 and kind.startswith("text/plain"), (r.status_code, r.text[:500])
    return parse(r.text), worker_of(r)


def answered_in_turn(url: str) -> int:
    """How many requests the server at `url` has answered in the turn they arrived, without an
    ASGI task (connections.py), so far: one scrape."""
    samples, _ = scrape(url)
    return int(samples["offer_http_answered_in_turn_total"])


def worker_of(r: httpx.Response) -> str:
    """The process that answered: request ids are a per-process prefix and a count."""
    return r.headers["x-request-id"].rsplit("_", 1)[0]


def matching(samples: dict[str, float], name: str, **labels: str) -> dict[str, float]:
    """The samples of `name` that carry every one of `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return {
        key: value
        for key, value in samples.items()
        if key.split("{", 1)[0] == name and all(w in key for w in wanted)
    }
