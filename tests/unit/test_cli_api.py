"""The API client: each call's route, headers and body, and the error tree (``responses``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses

from factory_cli.api import (
    ApiError,
    Conflict,
    Fenced,
    FleetClient,
    Forbidden,
    NotFound,
    Rejected,
    Unauthorized,
    Unavailable,
    new_request_id,
    reply_may_be_lost,
)
from fleet.http.parsing import CLAIM_REQUEST_ID

API = "http://fleet.test/api"


def sent(rsps: responses.RequestsMock, index: int = -1) -> tuple[Any, Any]:
    request = rsps.calls[index].request
    return request, json.loads(request.body) if request.body else None


def test_api_factory_calls_carry_the_token_and_the_epoch(rsps: responses.RequestsMock) -> None:
    client = FleetClient(API + "/", "flf_t", user_agent="fleet-factory/test")
    rsps.get(f"{API}/fleet/queue-state", json={"version": 3, "maxSkipSeconds": 30})
    rsps.post(f"{API}/fleet/claim", status=204)
    rsps.patch(f"{API}/fleet/jobs/j1", json={"stage": "building"})
    rsps.post(f"{API}/fleet/jobs/j1/lease/renew", json={"lease": {}, "cadence": {}})
    rsps.post(f"{API}/fleet/jobs/j1/lease/release", json={"stage": "queued"})
    rsps.post(f"{API}/fleet/jobs/j1/events", status=201, json={"stored": 1, "received": 1})
    rsps.post(
        f"{API}/fleet/factories/heartbeat",
        json={"status": "live", "cadence": {"heartbeatSeconds": 30}, "commands": []},
    )
    rsps.delete(f"{API}/fleet/factories/fa", json={"deregistered": True})

    assert client.queue_state() == {"version": 3, "maxSkipSeconds": 30}
    request, _ = sent(rsps)
    assert request.headers["Authorization"] == "Bearer flf_t"
    assert request.headers["User-Agent"] == "fleet-factory/test"
    assert "X-Fleet-Product" not in request.headers
    assert client.claim(capabilities=["os:linux"], seats=2, load=1, cost=0.5, version="v") is None
    assert sent(rsps)[1] == {
        "capabilities": ["os:linux"],
        "seats": 2,
        "load": 1,
        "cost": 0.5,
        "version": "v",
    }
    client.report("j1", 4, stage="building", checkpoint=None, progress={"costUsd": 1.0})
    request, body = sent(rsps)
    assert request.method == "PATCH"
    assert body == {"leaseEpoch": 4, "stage": "building", "progress": {"costUsd": 1.0}}
    client.renew("j1", 4)
    assert sent(rsps)[1] == {"leaseEpoch": 4}
    client.release("j1", 4, checkpoint={"branch": "b"}, reason="drain")
    assert sent(rsps)[1] == {"leaseEpoch": 4, "checkpoint": {"branch": "b"}, "reason": "drain"}
    client.post_events("j1", 4, [{"seq": 0, "type": "t", "payload": None}])
    assert sent(rsps)[1] == {"leaseEpoch": 4, "events": [{"seq": 0, "type": "t", "payload": None}]}
    client.heartbeat({"seats": 1, "jobs": [], "ack": ["c1"]})
    assert sent(rsps)[1]["ack"] == ["c1"]
    assert client.deregister("fa") == {"deregistered": True}


def test_api_enroll_uses_the_enrollment_token_as_bearer(rsps: responses.RequestsMock) -> None:
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=201,
        json={"factoryId": "fa", "token": "flf_new", "product": "p"},
    )
    answer = FleetClient(API, None).enroll(
        "fle_x", name="fa", capabilities=["os:linux"], seats=2, version="v", cost=0.3
    )
    assert answer["token"] == "flf_new"
    request, body = sent(rsps)
    assert request.headers["Authorization"] == "Bearer fle_x"
    assert body == {
        "name": "fa",
        "capabilities": ["os:linux"],
        "seats": 2,
        "version": "v",
        "cost": 0.3,
    }


def test_api_operator_calls_name_the_product(rsps: responses.RequestsMock) -> None:
    client = FleetClient(API, "flo_op", product="demo")
    rsps.post(f"{API}/fleet/jobs", status=201, json={"job": {"id": "j1"}, "created": True})
    rsps.get(f"{API}/fleet/jobs", json={"jobs": [{"id": "j1"}], "count": 1})
    rsps.post(f"{API}/fleet/jobs/j1/ship", json={"stage": "shipped"})
    rsps.post(f"{API}/fleet/factories/fa/commands", status=202, json={"command": {}})
    client.submit_markdown("---\ntitle: x\n---\nbody")
    request = rsps.calls[-1].request
    assert request.headers["X-Fleet-Product"] == "demo"
    assert request.headers["Content-Type"].startswith("text/markdown")
    assert request.body == b"---\ntitle: x\n---\nbody"
    assert client.list_jobs("queued") == [{"id": "j1"}]
    assert rsps.calls[-1].request.url == f"{API}/fleet/jobs?limit=1000&stage=queued"
    client.job_action("j1", "ship", reason="looks good")
    assert sent(rsps)[1] == {"reason": "looks good"}
    client.command("fa", "cancel-job", job_id="j1")
    assert sent(rsps)[1] == {"command": "cancel-job", "jobId": "j1"}


def test_api_list_jobs_follows_next_and_stops_at_a_limit(rsps: responses.RequestsMock) -> None:
    client = FleetClient(API, "flo_op", product="demo")
    pages = {
        None: ([{"id": "j1"}, {"id": "j2"}], "c2"),
        "c2": ([{"id": "j3"}, {"id": "j4"}], "c4"),
        "c4": ([{"id": "j5"}], None),
    }

    def page(request: Any) -> tuple[int, dict[str, str], str]:
        jobs, after = pages[request.params.get("cursor")]
        return 200, {}, json.dumps({"jobs": jobs, "count": len(jobs), "next": after})

    rsps.add_callback(responses.GET, f"{API}/fleet/jobs", callback=page)
    assert [j["id"] for j in client.list_jobs()] == ["j1", "j2", "j3", "j4", "j5"]
    assert [c.request.params.get("cursor") for c in rsps.calls] == [None, "c2", "c4"]
    assert {c.request.params["limit"] for c in rsps.calls} == {"1000"}
    # A limit asks for no more than it needs, and stops following ``next`` once it has it.
    calls = len(rsps.calls)
    assert [j["id"] for j in client.list_jobs(limit=3)] == ["j1", "j2", "j3"]
    asked = [(c.request.params["limit"], c.request.params.get("cursor")) for c in rsps.calls]
    assert asked[calls:] == [("3", None), ("1", "c2")]


ERRORS: list[tuple[int, dict[str, Any], type[ApiError]]] = [
    (409, {"error": "fenced", "message": "not current"}, Fenced),
    (409, {"error": "illegal_transition", "message": "no"}, Conflict),
    (401, {"error": "unauthorized", "message": "revoked"}, Unauthorized),
    (403, {"error": "forbidden", "details": {"disallowed": ["gpu"]}}, Forbidden),
    (404, {"error": "job_not_found"}, NotFound),
    (400, {"error": "validation", "message": "bad"}, Rejected),
    (413, {}, Rejected),
    (429, {"error": "throttled"}, Unavailable),
    (500, {"error": "internal"}, Unavailable),
    (503, {"error": "store_unavailable"}, Unavailable),
]


@pytest.mark.parametrize(("status", "body", "kind"), ERRORS)
def test_api_errors_map_to_the_error_tree(
    rsps: responses.RequestsMock, status: int, body: dict[str, Any], kind: type[ApiError]
) -> None:
    rsps.patch(f"{API}/fleet/jobs/j1", status=status, json=body)
    with pytest.raises(kind) as error:
        FleetClient(API, "flf_t").report("j1", 1, stage="shipped")
    assert type(error.value) is kind
    assert error.value.status == status and error.value.code == body.get("error")
    assert error.value.message.startswith(f"PATCH /fleet/jobs/j1: HTTP {status}")
    assert error.value.retryable is (kind is Unavailable)


def test_api_forbidden_names_the_disallowed_capabilities(rsps: responses.RequestsMock) -> None:
    rsps.post(
        f"{API}/fleet/claim",
        status=403,
        json={"error": "forbidden", "details": {"disallowed": ["gpu", "has:docker"]}},
    )
    with pytest.raises(Forbidden) as error:
        FleetClient(API, "flf_t").claim(capabilities=["gpu"], seats=1, load=0, cost=0.5)
    assert error.value.disallowed == ["gpu", "has:docker"]


def test_api_retry_after_is_kept(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/fleet/queue-state", status=503, headers={"Retry-After": "12"}, json={})
    with pytest.raises(Unavailable) as error:
        FleetClient(API, "flf_t").queue_state()
    assert error.value.retry_after == 12.0


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("cut"),
    ],
)
def test_api_network_failures_are_unavailable(
    rsps: responses.RequestsMock, failure: Exception
) -> None:
    rsps.get(f"{API}/fleet/queue-state", body=failure)
    with pytest.raises(Unavailable) as error:
        FleetClient(API, "flf_t").queue_state()
    assert isinstance(error.value.__cause__, requests.RequestException)


def test_api_a_body_that_is_not_json_is_unavailable(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/fleet/queue-state", body="<html>proxy error</html>", status=200)
    with pytest.raises(Unavailable, match="not JSON"):
        FleetClient(API, "flf_t").queue_state()


def test_api_an_html_error_page_still_maps_by_status(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/fleet/queue-state", body="<html>bad gateway</html>", status=502)
    with pytest.raises(Unavailable, match="502: <html>bad gateway</html>"):
        FleetClient(API, "flf_t").queue_state()


def test_api_reads_for_operators(rsps: responses.RequestsMock) -> None:
    client = FleetClient(API, "flo_op", product="p")
    calls: list[tuple[str, Callable[[], Any], Any]] = [
        ("/fleet/factories", client.list_factories, {"factories": [{"id": "fa"}]}),
        ("/fleet/metrics", client.metrics, {"stages": {}}),
        ("/fleet/jobs/j1", lambda: client.get_job("j1"), {"id": "j1"}),
        ("/fleet/jobs/j1/explain", lambda: client.explain("j1"), {"summary": "x"}),
    ]
    for path, call, answer in calls:
        rsps.get(API + path, json=answer)
        assert call() in (answer, answer.get("factories"))
    rsps.get(f"{API}/fleet/jobs/j1/events", json={"events": [{"seq": 1}], "last": 1})
    assert client.job_events("j1") == [{"seq": 1}]
    rsps.get(f"{API}/fleet/jobs/j1/agent-events", json={"events": [{"key": "k"}], "cursor": "k"})
    assert client.agent_events("j1") == ([{"key": "k"}], "k")
    rsps.get(f"{API}/fleet/events", json={"events": [], "cursor": None})
    assert client.product_events("c0") == ([], "c0")


def test_api_claim_sends_its_request_id_and_retry_only_on_a_retry(
    rsps: responses.RequestsMock,
) -> None:
    client = FleetClient(API, "flf_t")
    rsps.post(f"{API}/fleet/claim", status=204)
    rsps.post(f"{API}/fleet/claim", status=204)
    rsps.post(f"{API}/fleet/claim", status=204)
    base = {"capabilities": [], "seats": 1, "load": 0, "cost": 0.5}
    assert client.claim(capabilities=[], seats=1, load=0, cost=0.5, request_id="r-000001") is None
    assert sent(rsps)[1] == {**base, "requestId": "r-000001"}
    client.claim(capabilities=[], seats=1, load=0, cost=0.5, request_id="r-000001", retry=True)
    assert sent(rsps)[1] == {**base, "requestId": "r-000001", "retry": True}
    client.claim(capabilities=[], seats=1, load=0, cost=0.5, retry=True)  # no id: no retry
    assert sent(rsps)[1] == base


def test_api_new_request_ids_are_short_url_safe_and_distinct() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(CLAIM_REQUEST_ID, i) for i in ids)  # the server's pattern


@pytest.mark.parametrize(
    ("answer", "lost"),
    [
        (requests.ReadTimeout("read timed out"), True),
        (requests.ConnectionError("connection reset by peer"), True),
        ((500, {"error": "internal"}), True),
        ((503, {"error": "store_unavailable"}), True),
        ((429, {"error": "throttled"}), False),
        ((200, "not json"), True),
    ],
)
def test_api_reply_may_be_lost_after_anything_but_a_429(
    rsps: responses.RequestsMock, answer: Any, lost: bool
) -> None:
    if isinstance(answer, Exception):
        rsps.post(f"{API}/fleet/claim", body=answer)
    elif isinstance(answer[1], str):
        rsps.post(f"{API}/fleet/claim", status=answer[0], body=answer[1])
    else:
        rsps.post(f"{API}/fleet/claim", status=answer[0], json=answer[1])
    with pytest.raises(Unavailable) as error:
        FleetClient(API, "flf_t").claim(capabilities=[], seats=1, load=0, cost=0.5)
    assert reply_may_be_lost(error.value) is lost
