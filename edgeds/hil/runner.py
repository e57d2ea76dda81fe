"""``edgeds hil run``: set up -> deploy -> conformance -> perf -> reliability -> telemetry -> report.

This implementation drives SIMULATED rigs (``sim:`` in the rig YAML): for the run it starts
mosquitto (persistent) and N sshd devices on loopback, installs the agent through the real
``setup_host`` path, deploys a signed bundle with ``deploy_bundle`` and talks to each device's
agent over HTTP (OIP) on ``127.0.10.N:8000``. Rigs naming a real ``target`` are refused with
:class:`~edgeds.errors.HilError` (the schema and leases are ready for them; the SSH lease and the
hook-driven fault matrix are not).

Leases: the rig lease (``<lease_dir>/<rig>.lease``) is taken first, so two runs of one rig never
overlap; then one lease per device in its install dir (``hil.lease``). A busy rig makes the run
wait up to ``rig.lease_wait_s`` and then raise HilError.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import HilError
from . import lease as leases
from .rig import Rig

if TYPE_CHECKING:
    from ..config import Target
    from ..deploy.targets import HostPlan
    from ..sim.broker import Mosquitto
    from ..sim.devices import SimDevice, SimFleet

SUITES = ("conformance", "perf", "reliability", "soak")
DEFAULT_SUITES = ("conformance", "perf", "reliability")
DEFAULT_LEASE_DIR = Path(tempfile.gettempdir()) / "edgeds-hil-leases"


@dataclass
class Check:
    """One expectation or suite check: ``passed`` is None when it could not be measured."""

    name: str
    device: str
    bound: str
    measured: Any
    passed: bool | None
    note: str = ""


@dataclass
class RunResult:
    rig: str
    suites: list[str]
    started_at: float
    seconds: float = 0.0
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    throughput: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    temperature: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    def add(self, name: str, device: str, bound: str, measured: Any, passed: bool | None, note: str = "") -> None:
        self.checks.append(Check(name, device, bound, measured, passed, note))


Progress = Callable[[str], None]


def _http(url: str, body: bytes | None = None, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _model_name(base: str) -> str:
    stats = _http(f"{base}/v2/models/stats")["model_stats"]
    if not stats:
        raise HilError(f"the agent at {base} serves no model")
    return str(stats[0]["name"])


def _serves(base: str) -> bool:
    try:
        return bool(_http(f"{base}/v2/models/stats", timeout=2.0)["model_stats"])
    except (OSError, ValueError, KeyError):
        return False


def _conformance(result: RunResult, name: str, base: str, bundle_path: Path) -> None:
    from ..bundle import load_bundle

    bundle = load_bundle(bundle_path, verify=False)
    try:
        inputs, outputs = bundle.golden()
        golden = bundle.manifest.golden
        in_name = bundle.manifest.io.inputs[0].name
    finally:
        bundle.close()
    x = np.asarray(inputs)
    body = {"inputs": [{"name": in_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    reply = _http(f"{base}/v2/models/{_model_name(base)}/infer", json.dumps(body).encode(), timeout=30.0)
    worst = 0.0
    ok = True
    for out in reply["outputs"]:
        want = np.asarray(outputs[out["name"]], dtype=np.float64)
        got = np.asarray(out["data"], dtype=np.float64).reshape(want.shape)
        worst = max(worst, float(np.abs(got - want).max()))
        ok &= bool(np.allclose(got, want, atol=golden.atol, rtol=golden.rtol))
    result.add("golden_outputs", name, f"atol {golden.atol:g}, rtol {golden.rtol:g}", round(worst, 8), ok)


def _perf(result: RunResult, name: str, base: str, sample: np.ndarray, duration_s: float) -> dict[str, Any]:
    from ..bench import HttpClient, closed_loop, oip_binary_body, summarize

    host, _, port = base.removeprefix("http://").partition(":")
    body, headers = oip_binary_body("input", sample)
    client = HttpClient(host, int(port), f"/v2/models/{_model_name(base)}/infer", body, headers)
    try:
        samples = closed_loop(client, concurrency=2, duration_s=duration_s, warmup_s=0.2)
    finally:
        client.close()
    summary = summarize(samples, samples_per_query=int(sample.shape[0]))
    starts, ends = np.asarray(samples.starts), np.asarray(samples.ends)
    ok = np.asarray(samples.status) == 200
    result.latencies_ms[name] = [round(float(v), 4) for v in ((ends - starts)[ok] * 1000.0)]
    if len(ends):
        t0, step = float(starts.min()), 0.25
        bins = np.floor((ends[ok] - t0) / step).astype(int)
        counts = np.bincount(bins) if len(bins) else np.zeros(0, dtype=int)
        counts = counts[:-1] if len(counts) > 1 else counts  # the last bin is partial
        result.throughput[name] = [(round(i * step, 3), float(c) / step) for i, c in enumerate(counts)]
    return summary


def _agent_serves(device: SimDevice, release: str) -> bool:
    """Whether the device's agent reports serving ``release`` (its ``run/agent.json``)."""
    try:
        agent = json.loads((device.install_dir / "run" / "agent.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(agent.get("release") == release and agent.get("state") == "serving")


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def run_rig(
    rig: Rig,
    suites: list[str] | tuple[str, ...] = DEFAULT_SUITES,
    *,
    bundle: Path | None = None,
    work: Path,
    lease_dir: Path = DEFAULT_LEASE_DIR,
    perf_seconds: float = 1.5,
    progress: Progress = lambda _: None,
) -> RunResult:
    """Run ``suites`` on ``rig``; the result holds every check (see :attr:`RunResult.passed`)."""
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise HilError(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    if rig.sim is None:
        raise HilError(f"rig {rig.name} names real devices (target {rig.target}): only simulated rigs run here yet")
    owner = leases.default_owner()
    rig_lease = leases.acquire(lease_dir / f"{rig.name}.lease", owner, rig.lease_ttl_s, rig.lease_wait_s)
    try:
        return _run_sim(rig, list(suites), bundle, work, perf_seconds, owner, progress)
    finally:
        rig_lease.release()


def _run_sim(
    rig: Rig, suites: list[str], bundle: Path | None, work: Path, perf_s: float, owner: str, progress: Progress
) -> RunResult:
    from ..bundle import generate_keypair, load_bundle
    from ..config import MqttConfig
    from ..deploy.rollout import deploy_bundle
    from ..deploy.setup import setup_host
    from ..deploy.targets import host_plans, resolve_target
    from ..sim.broker import Mosquitto
    from ..sim.bundles import make_bundle
    from ..sim.devices import SimFleet
    from ..telemetry.envelope import decode, split_topic
    from ..telemetry.mqtt import Message, MqttSubscriber, resolve_settings
    from ..telemetry.view import FleetView

    assert rig.sim is not None
    work.mkdir(parents=True, exist_ok=True)
    result = RunResult(rig.name, suites, time.time())
    expect = rig.expectation()
    private, public = generate_keypair(work / "keys")
    bundle = bundle or make_bundle(work / "bundle-1", 1, private)
    messages: list[tuple[str, bytes, bool]] = []

    def on_message(message: Message) -> None:
        messages.append((message.topic, message.payload, message.retain))

    with Mosquitto(persistence=True, directory=work / "broker") as broker:
        progress(f"mosquitto on {broker.url}; starting {rig.sim.devices} simulated devices")
        with SimFleet(rig.sim.devices, profile=rig.sim.profile, mqtt_url=broker.url) as fleet:
            target_path = fleet.write_target(mqtt={"url": broker.url, "protocol": "3.1.1", "telemetry_interval_s": 0.5})
            target, path = resolve_target(str(target_path))
            plans = host_plans(target, path)
            python = str(fleet.device_python())
            progress("set up: installing the agent on every device")
            with ThreadPoolExecutor(max_workers=len(plans)) as pool:
                setups = list(
                    pool.map(
                        lambda plan: setup_host(
                            target, plan, wheel=None, public_key=public.read_bytes(), python=python
                        ),
                        plans,
                    )
                )
            for plan, setup in zip(plans, setups, strict=True):
                result.add("setup", plan.host.name, "ok", setup.message or "ok", setup.ok)
            if not all(s.ok for s in setups):
                return result
            device_leases = leases.acquire_all(
                [d.install_dir / "hil.lease" for d in fleet.devices], owner, rig.lease_ttl_s
            )
            settings = resolve_settings(MqttConfig(url=broker.url, protocol="3.1.1"))
            subscriber = MqttSubscriber(
                settings, ["edgeds/#"], on_message, client_id=f"hil-{rig.name}", persistent=True
            ).start()
            try:
                progress("deploy")
                rollout = deploy_bundle(plans, bundle, target.rollout)
                for host in rollout.hosts:
                    result.add("deploy", host.host, "SUCCEEDED", host.status, host.status == "SUCCEEDED")
                    result.devices.setdefault(host.host, {})["release"] = host.release
                if not rollout.succeeded:
                    return result
                opened = load_bundle(bundle, verify=False)
                manifest = opened.manifest
                opened.close()
                sample = np.zeros((1, *[int(d) for d in manifest.io.inputs[0].shape[1:]]), dtype=np.float32)
                for device in fleet.devices:
                    base = f"http://{device.address}:8000"
                    info = result.devices.setdefault(device.name, {})
                    agent = json.loads((device.install_dir / "run" / "agent.json").read_text())
                    info["load_s"] = agent.get("load_s")
                    if expect.max_model_load_s is not None:
                        load_s = agent.get("load_s")
                        result.add(
                            "max_model_load_s",
                            device.name,
                            f"<= {expect.max_model_load_s:g} s",
                            load_s,
                            None if load_s is None else float(load_s) <= expect.max_model_load_s,
                        )
                    if expect.max_accuracy_drop is not None:
                        drop = manifest.accuracy.top1_drop if manifest.accuracy else None
                        result.add(
                            "max_accuracy_drop",
                            device.name,
                            f"<= {expect.max_accuracy_drop:g} points",
                            drop,
                            None if drop is None else float(drop) <= expect.max_accuracy_drop,
                            "" if drop is not None else "the bundle records no accuracy (not measured)",
                        )
                    if "conformance" in suites:
                        progress(f"conformance on {device.name}")
                        _conformance(result, device.name, base, bundle)
                    if "perf" in suites or "soak" in suites:
                        progress(f"perf on {device.name}")
                        seconds = perf_s * (10 if "soak" in suites else 1)
                        summary = _perf(result, device.name, base, sample, seconds)
                        info["perf"] = summary
                        if expect.min_fps is not None:
                            fps = summary.get("samples_per_s", 0.0)
                            result.add("min_fps", device.name, f">= {expect.min_fps:g}", fps, fps >= expect.min_fps)
                        if expect.max_p99_ms is not None:
                            p99 = summary.get("p99_ms")
                            result.add(
                                "max_p99_ms",
                                device.name,
                                f"<= {expect.max_p99_ms:g} ms",
                                p99,
                                None if p99 is None else p99 <= expect.max_p99_ms,
                            )
                if "reliability" in suites:
                    _reliability(result, rig, fleet, plans, broker, private, target, progress)
                progress("telemetry: waiting for a last report from every device")
                time.sleep(1.5)
            finally:
                subscriber.stop()
                for held in device_leases:
                    held.release()
    view = FleetView()
    seqs: dict[str, set[int]] = {}
    for topic, payload, retained in messages:
        row = view.update(topic, payload)
        where = split_topic("edgeds", topic)
        if row is None or where is None:
            continue
        try:
            env = decode(payload)
        except Exception:
            continue
        if env.kind != "status" and not retained:  # a retained copy predates the subscription
            seqs.setdefault(where[0], set()).add(env.seq)
        if row.temperature_c is not None and env.kind == "telemetry":
            result.temperature.setdefault(where[0], []).append(
                (round(env.ts - result.started_at, 3), row.temperature_c)
            )
    result.telemetry = {
        "messages": len(messages),
        "devices": {d: r.as_dict() for d, r in view.rows.items()},
        "seqs": {d: [min(s), max(s), len(s)] for d, s in seqs.items() if s},
    }
    for device_id, got in seqs.items():
        complete = len(got) == max(got) - min(got) + 1
        result.add("telemetry_seqs_complete", device_id, "no gap", f"{len(got)} of {max(got) - min(got) + 1}", complete)
    if expect.max_temperature_c is not None:
        for device_id in seqs:
            temps = [t for _, t in result.temperature.get(device_id, [])]
            hottest = max(temps) if temps else None
            result.add(
                "max_temperature_c",
                device_id,
                f"<= {expect.max_temperature_c:g} °C",
                hottest,
                None if hottest is None else hottest <= expect.max_temperature_c,
                "" if temps else "no temperature sensor reported (not measured)",
            )
    result.seconds = round(time.time() - result.started_at, 2)
    return result


def _reliability(
    result: RunResult,
    rig: Rig,
    fleet: SimFleet,
    plans: list[HostPlan],
    broker: Mosquitto,
    private: Path,
    target: Target,
    progress: Progress,
) -> None:
    """The fault matrix that makes sense on the sim rig (power cycle only with a hook: skipped here)."""
    from ..deploy.host import host_command
    from ..deploy.rollout import deploy_bundle
    from ..sim.bundles import make_bundle

    device, plan = fleet.devices[0], plans[0]
    base = f"http://{device.address}:8000"
    progress(f"reliability: network cut on {device.name} (sshd stopped)")
    device.kill()
    try:
        host_command(plan, "status", timeout=10.0)
        unreachable = False
    except Exception:
        unreachable = True
    serving = _serves(base)
    device.start()
    try:
        back = bool(host_command(plan, "status", timeout=20.0))
    except Exception:
        back = False
    result.add(
        "network_cut",
        device.name,
        "unreachable, keeps serving, reachable again",
        {"unreachable": unreachable, "serving": serving, "back": back},
        unreachable and serving and back,
    )

    progress(f"reliability: agent kill on {device.name}")
    old = device.agent_pid()
    device.kill_agent()
    restarted = _wait(lambda: device.agent_pid() not in (None, old) and _serves(base), 30.0)
    result.add("agent_restart", device.name, "new agent serves within 30 s", device.agent_pid(), restarted)

    progress("reliability: broker outage (3 s)")
    broker.stop()
    time.sleep(3.0)
    broker.start()
    time.sleep(3.0)  # spooled telemetry drains; seq completeness is checked with the telemetry

    progress("reliability: deploy v2 then roll back")
    before = {d.name: (d.install_dir / "current").readlink().name for d in fleet.devices}
    second = make_bundle(fleet.base_dir / "bundle-2", 2, private)
    rollout = deploy_bundle(plans, second, target.rollout)
    for d, p in zip(fleet.devices, plans, strict=True):
        try:
            host_command(p, "rollback", {}, timeout=60.0)
        except Exception as exc:
            result.add("rollback", d.name, "back on the first release", f"error: {exc}", False)
            continue
        now = (d.install_dir / "current").readlink().name
        ok = rollout.succeeded and now == before[d.name] and _wait(partial(_agent_serves, d, now), 30.0)
        result.add("rollback", d.name, "back on the first release", now, ok)
    if rig.hooks.power_cycle is None:
        result.add("power_cycle", "*", "hook", "no power_cycle hook", None, "skipped: the rig has no hook")
