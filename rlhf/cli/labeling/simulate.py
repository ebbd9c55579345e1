"""``rlhf label simulate``: the embedded task's simulated labelers label through a running app,
each in its own thread, by the same HTTP API a browser page uses, so the demo and the tests
drive the real app (its assignment, reservations, overlap and quality rules).

The admin token comes from the environment (RLHF_ADMIN_TOKEN), never from the command line: it
creates the simulated labelers through ``POST /api/admin/labelers``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import urllib.error
import urllib.request

from rlhf.config.labeling import LabelSimulateConfig
from rlhf.embedded.labelers import labeler_pool
from rlhf.errors import UserError

CONFIG_CLASS = LabelSimulateConfig


class ApiError(UserError):
    """The app answered a request with an error."""


def call(url: str, token: str, body: dict | None = None, timeout: float = 60.0) -> tuple[int, dict]:
    """One API call with a Bearer token: (status, JSON body); a POST when ``body`` is given."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read().decode("utf-8"))
        except ValueError:
            return err.code, {"error": f"HTTP {err.code}"}
    except urllib.error.URLError as err:
        raise ApiError(f"cannot reach {url}: {err.reason} (is `rlhf serve` running?)") from err


def label_queue(base: str, token: str, labeler, rng: random.Random, max_labels: int = 0) -> dict:
    """Label items until the queue is empty (or ``max_labels``): the simulated person ranks the
    responses in the order shown. Returns its counts."""
    counts = {"labels": 0, "conflicts": 0}
    while not max_labels or counts["labels"] < max_labels:
        status, data = call(f"{base}/api/next", token)
        if status != 200:
            raise ApiError(f"{labeler.name}: GET /api/next -> {status}: {data.get('error')}")
        item = data["item"]
        if item is None:
            break
        ranking = labeler.rank(item["prompt"], item["responses"], item["ended"], rng)
        status, data = call(f"{base}/api/labels", token, {"item_id": item["item_id"], "kind": "ranking",
                                                          "ranking": ranking})
        if status == 201:
            counts["labels"] += 1
        elif status == 409:  # e.g. a reservation that expired while waiting: take the next item
            counts["conflicts"] += 1
        else:
            raise ApiError(f"{labeler.name}: POST /api/labels -> {status}: {data.get('error')}")
    return counts


def run(config: LabelSimulateConfig) -> dict:
    admin = os.environ.get("RLHF_ADMIN_TOKEN", "")
    if not admin:
        raise UserError("set RLHF_ADMIN_TOKEN to the admin token (rlhf label admin-token prints it)")
    base = config.url.rstrip("/")
    pool = labeler_pool(config.labelers, seed=config.seed)
    careless = {p.name for p in pool[config.labelers - config.careless:]}
    pool = [dataclasses.replace(p, name=config.name_prefix + p.name,
                                noise_std=config.careless_noise if p.name in careless else p.noise_std) for p in pool]
    tokens = {}
    for person in pool:
        status, data = call(f"{base}/api/admin/labelers", admin, {"name": person.name})
        if status != 201:
            raise ApiError(f"cannot add labeler {person.name}: {status}: {data.get('error')}")
        tokens[person.name] = data["token"]
    results, errors = {}, []

    def work(person) -> None:
        try:
            results[person.name] = label_queue(base, tokens[person.name], person,
                                               random.Random(f"{config.seed}-{person.name}"), config.max_labels)
        except Exception as err:  # noqa: BLE001 - reported after every thread ends
            errors.append(err)

    threads = [threading.Thread(target=work, args=(p,), name=p.name) for p in pool]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for name, counts in results.items():
        kind = "careless" if name.removeprefix(config.name_prefix) in careless else "careful"
        print(f"{name} ({kind}): {counts['labels']} labels, {counts['conflicts']} conflicts")
    return {"labelers": results, "careless": sorted(config.name_prefix + n for n in careless)}
