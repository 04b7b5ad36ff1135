"""The Prometheus adapter rules name series a real server exports: /metrics of a running server
(loopback, tokens off) has every seriesQuery's metric with the labels the rules aggregate."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from serving.security import SecuritySettings
from tests.deploy.kustomize import render
from tests.security.conftest import start_secured
from tests.serving.tiny_models import build_repository

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> str:
    running = start_secured(build_repository(tmp_path_factory.mktemp("models")), SecuritySettings())
    try:
        port = running.server.http_port
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        reply.raise_for_status()
        return reply.text
    finally:
        running.stop()


def _rules() -> list[dict]:
    docs = render(ROOT / "deploy" / "k8s" / "monitoring")
    (config,) = [d for d in docs if "config.yaml" in d.get("data", {})]
    return yaml.safe_load(config["data"]["config.yaml"])["rules"]


def test_each_rule_names_an_exported_metric(exposition):
    rules = _rules()
    assert rules
    for rule in rules:
        metric = re.match(r"(\w+)\{", rule["seriesQuery"])[1]
        family = metric.removesuffix("_total")
        assert re.search(rf"^# TYPE {family}(_total)? ", exposition, re.M), metric
        assert re.fullmatch(rule["name"]["matches"].strip("^$"), metric)


def test_queue_depth_is_per_model_version(exposition):
    lines = [x for x in exposition.splitlines() if x.startswith("vision_queue_depth{")]
    assert lines, "the server exports no vision_queue_depth sample with models loaded"
    assert all('model="' in x and 'version="' in x for x in lines)
