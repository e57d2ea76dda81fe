"""``edgeds hil run``: leases -> set up -> deploy -> conformance -> perf -> reliability ->
telemetry -> report. One suite for both kinds of rig:

* a real rig (``target:``): the target's devices over SSH. They must have been set up once with
  ``edgeds device setup`` (agent running, publisher key trusted); the run checks that, deploys
  ``--bundle`` (required: it is the release being gated) and subscribes to the target's broker.
* a simulated rig (``sim:``): for the run, mosquitto (persistent) and N sshd devices on
  loopback are started, the agent is installed through the real ``setup_host`` path, and a tiny
  signed bundle is made unless ``--bundle`` is given. Everything is removed afterwards.

From then on both go through the same code (:func:`_gate`): each device is a
:class:`~.devices.RigDevice` (SSH session, agent status from the device's ``status`` step, the
agent's HTTP directly or through an SSH port forward) and faults go through
:class:`~.devices.Faults` (the rig's hooks; sshd stop and broker stop on the sim rig).

Leases: the rig lease (``<lease_dir>/<rig>.lease`` on this machine) is taken first, so two runs
of one rig from this machine never overlap; then one lease per device in its install dir
(``hil.lease``, written over SSH, so runs from different machines or rigs sharing a device
exclude each other too), before anything is changed on it. A busy lease makes the run wait up to
``rig.lease_wait_s`` and then raise HilError.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BundleError, HilError, TelemetryError
from . import lease as leases
from .devices import Faults, RigDevice, wait_until
from .rig import Rig

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..config import Target
    from ..deploy.targets import HostPlan

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


def _golden_feeds(base: str, model: str, bundle_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], Any]:
    """Every golden input of the artifact the device at ``base`` opened (by input name, the image in
    that artifact's layout), its golden outputs and its golden tolerances."""
    from ..bundle import load_bundle

    # the golden of the artifact the device opened (a fallback artifact may carry its own, in its layout)
    opened = _http(f"{base}/v2/models/{model}").get("opened") or {}
    bundle = load_bundle(bundle_path, verify=False)
    try:
        index = int(opened.get("artifact", 0))
        if not 0 <= index < len(bundle.manifest.artifacts):
            index = 0
        inputs, outputs = bundle.golden(index)
        golden = bundle.manifest.golden_for(index)
        extra = bundle.golden_extra_inputs()  # a multi-input model's other inputs, by name
        in_name = next((i.name for i in bundle.manifest.io.inputs if i.name not in extra), None)
    finally:
        bundle.close()
    feeds = {**({in_name: np.asarray(inputs, dtype=np.float32)} if in_name is not None else {}), **extra}
    return feeds, outputs, golden


def _conformance(result: RunResult, name: str, base: str, bundle_path: Path) -> None:
    from ..runtime.oip_requests import oip_binary_inputs

    model = _model_name(base)
    feeds, outputs, golden = _golden_feeds(base, model, bundle_path)
    # binary inputs (a JSON body of the golden images would pass the server's body limit), JSON outputs
    body, headers = oip_binary_inputs(feeds, binary_outputs=False)
    request = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30.0) as response:
        reply = json.loads(response.read())
    worst = 0.0
    ok = True
    for out in reply["outputs"]:
        want = np.asarray(outputs[out["name"]], dtype=np.float64)
        got = np.asarray(out["data"], dtype=np.float64).reshape(want.shape)
        worst = max(worst, float(np.abs(got - want).max()))
        ok &= bool(np.allclose(got, want, atol=golden.atol, rtol=golden.rtol))
    result.add("golden_outputs", name, f"atol {golden.atol:g}, rtol {golden.rtol:g}", round(worst, 8), ok)


def _accuracy_drop(manifest: Any) -> float | None:
    """The bundle's measured accuracy drop in points: top-1 for a classifier, mAP for a detector
    (from its first artifact's gate figures); None when it records none."""
    if manifest.accuracy is not None and manifest.accuracy.top1_drop is not None:
        return float(manifest.accuracy.top1_drop)
    for entry in manifest.artifacts:
        figures = entry.gated.figures if entry.gated is not None else {}
        if figures.get("map_drop") is not None:
            return float(figures["map_drop"])
    return None


def _perf(result: RunResult, name: str, base: str, bundle_path: Path, duration_s: float) -> dict[str, Any]:
    """Closed-loop requests of one sample (the first golden row of every input) for ``duration_s``."""
    from ..bench import HttpClient, closed_loop, summarize
    from ..runtime.oip_requests import oip_binary_inputs

    host, _, port = base.removeprefix("http://").partition(":")
    model = _model_name(base)
    feeds, _, _ = _golden_feeds(base, model, bundle_path)
    sample = {k: np.ascontiguousarray(v[:1]) for k, v in feeds.items()}
    body, headers = oip_binary_inputs(sample)
    client = HttpClient(host, int(port), f"/v2/models/{model}/infer", body, headers)
    try:
        samples = closed_loop(client, concurrency=2, duration_s=duration_s, warmup_s=0.2)
    finally:
        client.close()
    summary = summarize(samples, samples_per_query=1)
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
    if rig.sim is None and bundle is None:
        raise HilError(f"rig {rig.name} has real devices: give the bundle to gate (--bundle)")
    if bundle is not None and not Path(bundle).exists():
        raise HilError(f"no bundle at {bundle}")
    owner = leases.default_owner()
    rig_lease = leases.acquire(lease_dir / f"{rig.name}.lease", owner, rig.lease_ttl_s, rig.lease_wait_s)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if rig.sim is not None:
            return _run_sim(rig, list(suites), bundle, work, perf_seconds, owner, progress)
        assert bundle is not None
        return _run_target(rig, list(suites), bundle, perf_seconds, owner, progress)
    finally:
        rig_lease.release()


def _run_target(rig: Rig, suites: list[str], bundle: Path, perf_s: float, owner: str, progress: Progress) -> RunResult:
    from ..deploy.targets import host_plans, resolve_target

    assert rig.target is not None
    target, path = resolve_target(rig.target)
    plans = host_plans(target, path)

    def check_setup(devices: list[RigDevice], result: RunResult) -> bool:
        ok = True
        for device in devices:
            try:
                agent = device.agent()
            except Exception as exc:  # a failing device is a failed check in the report; the run goes on
                log.warning("hil: %s: agent status failed", device.name, exc_info=True)
                result.add("setup", device.name, "agent running", f"error: {exc}", False)
                ok = False
                continue
            running = bool(agent.get("running"))
            note = "" if running else "run `edgeds device setup` for this target first"
            result.add("setup", device.name, "agent running", agent.get("state"), running, note)
            ok &= running
        return ok

    return _gate(rig, suites, target, plans, bundle, Faults(rig.hooks), check_setup, perf_s, owner, progress)


def _run_sim(
    rig: Rig, suites: list[str], bundle: Path | None, work: Path, perf_s: float, owner: str, progress: Progress
) -> RunResult:
    from ..bundle import generate_keypair
    from ..deploy.setup import setup_host
    from ..deploy.targets import host_plans, resolve_target
    from ..sim.broker import Mosquitto
    from ..sim.bundles import make_bundle
    from ..sim.devices import SimFleet

    assert rig.sim is not None
    private, public = generate_keypair(work / "keys")
    bundle = bundle or make_bundle(work / "bundle-1", 1, private)
    with Mosquitto(persistence=True, directory=work / "broker") as broker:
        progress(f"mosquitto on {broker.url}; starting {rig.sim.devices} simulated devices")
        with SimFleet(rig.sim.devices, profile=rig.sim.profile, mqtt_url=broker.url) as fleet:
            target_path = fleet.write_target(mqtt={"url": broker.url, "protocol": "3.1.1", "telemetry_interval_s": 0.5})
            target, path = resolve_target(str(target_path))
            plans = host_plans(target, path)
            python = str(fleet.device_python())

            def setup(devices: list[RigDevice], result: RunResult) -> bool:
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
                for plan, done in zip(plans, setups, strict=True):
                    result.add("setup", plan.host.name, "ok", done.message or "ok", done.ok)
                return all(s.ok for s in setups)

            def second_bundle() -> Path:
                return make_bundle(work / "bundle-2", 2, private)

            faults = Faults(rig.hooks, sim={d.name: d for d in fleet.devices}, broker=broker)
            return _gate(rig, suites, target, plans, bundle, faults, setup, perf_s, owner, progress, second_bundle)


def _gate(
    rig: Rig,
    suites: list[str],
    target: Target,
    plans: list[HostPlan],
    bundle: Path,
    faults: Faults,
    setup: Callable[[list[RigDevice], RunResult], bool],
    perf_s: float,
    owner: str,
    progress: Progress,
    second_bundle: Callable[[], Path] | None = None,
) -> RunResult:
    """The suite proper, on devices that can be reached over SSH (see the module docstring)."""
    from ..bundle import Bundle
    from ..deploy.rollout import rollout as roll_out
    from ..telemetry.mqtt import Message, MqttSubscriber, resolve_settings

    result = RunResult(rig.name, suites, time.time())
    expect = rig.expectation()
    messages: list[tuple[str, bytes, bool]] = []

    def on_message(message: Message) -> None:
        messages.append((message.topic, message.payload, message.retain))

    devices = [RigDevice(plan, target.agent.http_host, target.agent.http_port) for plan in plans]
    device_leases: list[leases.Lease] = []
    subscriber: Any = None
    try:
        progress(f"leases: locking {len(devices)} device(s) for {owner}")
        for device in devices:
            try:
                device.open()
            except Exception as exc:  # a failing device is a failed check in the report; the run goes on
                log.warning("hil: %s: not reachable", device.name, exc_info=True)
                result.add("reachable", device.name, "ssh", f"error: {exc}", False)
        if not result.passed:
            return result
        device_leases = leases.acquire_all([d.lease_files() for d in devices], owner, rig.lease_ttl_s, rig.lease_wait_s)
        if not setup(devices, result):
            return result
        if target.mqtt.url:
            settings = resolve_settings(target.mqtt)
            subscriber = MqttSubscriber(
                settings, [f"{target.mqtt.prefix}/#"], on_message, client_id=f"hil-{rig.name}-{owner}", persistent=False
            ).start()
        progress("deploy")
        try:
            opened = Bundle.open(bundle, verify=False)
        except BundleError as exc:  # the same REJECTED line per host that the devices would give
            for plan in plans:
                result.add("deploy", plan.host.name, "SUCCEEDED", f"REJECTED: {exc}", False)
            return result
        with opened:
            rollout = roll_out(plans, opened, target.rollout)
        manifest = opened.manifest
        for host in rollout.hosts:
            result.add("deploy", host.host, "SUCCEEDED", host.status, host.status == "SUCCEEDED")
            result.devices.setdefault(host.host, {})["release"] = host.release
        if not rollout.succeeded:
            return result
        for device in devices:
            info = result.devices.setdefault(device.name, {})
            release = info.get("release")
            serving = wait_until(lambda device=device, release=release: device.serving(release), 60.0, 0.5)
            if not serving:
                result.add("serving", device.name, f"serves {release} within 60 s", device.agent().get("state"), False)
                continue
            agent = device.agent()
            info["load_s"] = agent.get("load_s")
            base = device.base_url
            _at_most(result, "max_model_load_s", device.name, expect.max_model_load_s, "s", agent.get("load_s"))
            drop = _accuracy_drop(manifest)
            missing = "the bundle records no accuracy (not measured)"
            _at_most(result, "max_accuracy_drop", device.name, expect.max_accuracy_drop, "points", drop, missing)
            if "conformance" in suites:
                progress(f"conformance on {device.name}")
                _conformance(result, device.name, base, bundle)
            if "perf" in suites or "soak" in suites:
                progress(f"perf on {device.name}")
                seconds = perf_s * (10 if "soak" in suites else 1)
                started = time.time()
                summary = _perf(result, device.name, base, bundle, seconds)
                info["perf"] = summary
                info["perf_window"] = [round(started, 3), round(time.time(), 3)]
                if expect.min_fps is not None:
                    fps = summary.get("samples_per_s", 0.0)
                    result.add("min_fps", device.name, f">= {expect.min_fps:g}", fps, fps >= expect.min_fps)
                _at_most(result, "max_p99_ms", device.name, expect.max_p99_ms, "ms", summary.get("p99_ms"))
        if "reliability" in suites:
            _reliability(result, devices, plans, bundle, target, faults, progress, second_bundle)
        if subscriber is not None:
            progress("telemetry: waiting for a last report from every device")
            time.sleep(max(1.5, 2 * target.mqtt.telemetry_interval_s))
    finally:
        if subscriber is not None:
            subscriber.stop()
        for held in device_leases:
            held.release()
        for device in devices:
            device.close()
        failing = {c.device for c in result.checks if c.passed is False}
        for device in devices:
            if device.name in failing:
                try:
                    console = faults.console(device)
                except Exception as exc:  # the report must still be written
                    log.warning("hil: %s: serial console hook failed", device.name, exc_info=True)
                    console = f"serial console hook failed: {exc}"
                if console is not None:
                    result.devices.setdefault(device.name, {})["console"] = console
    _collect_telemetry(result, messages, target.mqtt.prefix, expect.max_temperature_c)
    result.seconds = round(time.time() - result.started_at, 2)
    return result


def _collect_telemetry(
    result: RunResult, messages: list[tuple[str, bytes, bool]], prefix: str, max_temperature_c: float | None
) -> None:
    """Sequence checks, temperatures and perf-window energy from the devices' telemetry.

    Temperature and power come from each report's ``power`` section (the device's power module:
    tegrastats or thermal zones); a report without one (an older agent, or no sensor there) falls
    back to the hottest of its host and tegrastats sensors, as the monitor shows."""
    from ..telemetry.envelope import decode, split_topic
    from ..telemetry.view import FleetView
    from .power import PowerLog, hottest_c

    view = FleetView(prefix=prefix)
    power = PowerLog()
    seqs: dict[str, set[int]] = {}
    for topic, payload, retained in messages:
        row = view.update(topic, payload)
        where = split_topic(prefix, topic)
        if row is None or where is None:
            continue
        try:
            env = decode(payload)
        except TelemetryError:  # not an edgeds message (FleetView counts it as malformed)
            continue
        if env.kind != "status" and not retained:  # a retained copy predates the subscription
            seqs.setdefault(where[0], set()).add(env.seq)
        if env.kind != "telemetry":
            continue
        power.add(where[0], env.ts, env.payload)
        hottest = hottest_c(env.payload)
        if hottest is None:
            hottest = row.temperature_c
        if hottest is not None:
            result.temperature.setdefault(where[0], []).append((round(env.ts - result.started_at, 3), hottest))
    for device_id, info in result.devices.items():
        if "perf" in info:
            window = info.get("perf_window")
            fps = (info.get("perf") or {}).get("samples_per_s")
            info["energy"] = power.energy(device_id, tuple(window) if window else None, fps)
    result.telemetry = {
        "messages": len(messages),
        "devices": {d: r.as_dict() for d, r in view.rows.items()},
        "seqs": {d: [min(s), max(s), len(s)] for d, s in seqs.items() if s},
    }
    for device_id, got in seqs.items():
        complete = len(got) == max(got) - min(got) + 1
        result.add("telemetry_seqs_complete", device_id, "no gap", f"{len(got)} of {max(got) - min(got) + 1}", complete)
    for device_id in seqs:
        temps = [t for _, t in result.temperature.get(device_id, [])]
        missing = "no temperature sensor reported (not measured)"
        _at_most(result, "max_temperature_c", device_id, max_temperature_c, "°C", max(temps, default=None), missing)


def _at_most(
    result: RunResult, name: str, device: str, bound: float | None, unit: str, measured: Any, missing: str = ""
) -> None:
    """Add an upper-bound check (none when the rig sets no bound; n/a when nothing was measured)."""
    if bound is None:
        return
    ok = None if measured is None else float(measured) <= bound
    result.add(name, device, f"<= {bound:g} {unit}", measured, ok, missing if measured is None else "")


def _reliability(
    result: RunResult,
    devices: list[RigDevice],
    plans: list[HostPlan],
    bundle: Path,
    target: Target,
    faults: Faults,
    progress: Progress,
    second_bundle: Callable[[], Path] | None,
) -> None:
    """The fault matrix: network cut, agent kill, broker outage, rollback, power cycle (each where
    the rig can inject it; otherwise reported as skipped)."""
    from ..deploy.rollout import rollout as roll_out

    device = devices[0]
    release = result.devices.get(device.name, {}).get("release")
    if faults.can_cut_network(device):
        progress(f"reliability: network cut on {device.name}")
        pid = device.agent().get("pid")
        try:
            faults.cut_network(device)
            unreachable = not device.reachable(timeout=10.0)
            serving_during = _serves(device.base_url) if device.name in faults.sim else None
        finally:
            faults.restore_network(device)
        back = wait_until(device.reachable, 120.0, 1.0)
        same_agent = back and device.agent().get("pid") == pid and device.serving(release)
        measured: Any = {"unreachable": unreachable, "back": back, "agent_kept_serving": same_agent}
        if serving_during is not None:
            measured["served_during_cut"] = serving_during
        ok = unreachable and back and same_agent and serving_during is not False
        result.add("network_cut", device.name, "unreachable, keeps serving, reachable again", measured, ok)
    else:
        result.add("network_cut", device.name, "hook", "no network_cut/network_restore hooks", None, "skipped")

    progress(f"reliability: agent kill on {device.name}")
    old = device.kill_agent()
    restarted = wait_until(lambda: device.agent().get("pid") not in (None, old) and device.serving(release), 60.0, 0.5)
    result.add("agent_restart", device.name, "new agent serves within 60 s", device.agent().get("pid"), restarted)

    if faults.can_stop_broker():
        progress("reliability: broker outage (3 s)")
        faults.broker_outage(3.0)
        time.sleep(3.0)  # spooled telemetry drains; seq completeness is checked with the telemetry
    else:
        result.add("broker_outage", "*", "broker", "not this run's broker", None, "skipped on real rigs")

    progress("reliability: rollback")
    if second_bundle is not None:  # sim: deploy a v2 everywhere, then roll every device back
        rollout = roll_out(plans, second_bundle(), target.rollout)
        for d in devices:
            before = result.devices.get(d.name, {}).get("release")
            try:
                d.session.call("rollback", {}, timeout=60.0)
            except Exception as exc:  # a failing device is a failed check in the report; the run goes on
                log.warning("hil: %s: rollback failed", d.name, exc_info=True)
                result.add("rollback", d.name, "back on the gated release", f"error: {exc}", False)
                continue
            ok = rollout.succeeded and wait_until(lambda d=d, before=before: d.serving(before), 30.0, 0.3)
            result.add("rollback", d.name, "back on the gated release", d.agent().get("release"), ok)
    else:  # real: back to the device's previous release, then forward to the gated one again
        previous = (device.status().get("previous") or {}).get("id")
        if previous is None:
            result.add("rollback", device.name, "previous release", "none on the device", None, "skipped")
        else:
            try:
                device.session.call("rollback", {}, timeout=120.0)
                back_ok = wait_until(lambda: device.serving(previous), 120.0, 0.5)
                forward = roll_out([device.plan], bundle, target.rollout)
                ok = back_ok and forward.succeeded and wait_until(lambda: device.serving(release), 120.0, 0.5)
                measured = {"rolled_back_to": previous, "served": back_ok, "redeployed": forward.succeeded}
            except Exception as exc:  # a failing device is a failed check in the report; the run goes on
                log.warning("hil: %s: rollback and redeploy failed", device.name, exc_info=True)
                ok, measured = False, f"error: {exc}"
            result.add("rollback", device.name, "previous release serves, then the gated one again", measured, ok)

    if faults.can_power_cycle():
        progress(f"reliability: power cycle on {device.name}")
        started = time.monotonic()
        before = device.agent().get("pid")
        try:
            faults.power_cycle(device)

            def rebooted() -> bool:  # a power cycle restarts the agent: a new pid serving the release
                return device.agent().get("pid") not in (None, before) and device.serving(release)

            ok = wait_until(device.reachable, 600.0, 2.0) and wait_until(rebooted, 600.0, 1.0)
            elapsed = round(time.monotonic() - started, 1)
            measured = {"serving_again_s": elapsed, "agent_pid": [before, device.agent().get("pid")]}
        except Exception as exc:  # a failing device is a failed check in the report; the run goes on
            log.warning("hil: %s: power cycle failed", device.name, exc_info=True)
            ok, measured = False, f"error: {exc}"
        result.add("power_cycle", device.name, "a new agent serves the release again", measured, ok)
    else:
        result.add("power_cycle", "*", "hook", "no power_cycle hook", None, "skipped: the rig has no hook")
