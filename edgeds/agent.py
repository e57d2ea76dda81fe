"""The on-device process (``edgeds agent``): serve ``current``, reload without dropping requests.

Lifecycle: on start the agent takes ``run/agent.pid`` (refusing if another live agent holds
it), rolls back an activation that was never committed (:func:`edgeds.deploy.device.store.recover`,
so a device killed mid-deploy converges to its committed release), starts the Open Inference
Protocol server and loads the release ``current`` points at. ``SIGHUP`` asks for a reload:
the new release is loaded into a new engine while the old one keeps serving, then swapped in
and the old engine drained (requests in flight finish on it). A release that fails to load
leaves the old one serving and is reported ``failed``. ``SIGTERM``/``SIGINT`` stop cleanly.

The agent reports through ``run/agent.json`` (atomic rewrites): ``state`` (starting, idle,
loading, serving, failed), ``release`` (the release being served; ``null`` while nothing
serves), ``attempted`` (last release tried), ``generation`` (bumped after each reload request
is handled), ``error``, ``http``. The deploy step waits on that file after its SIGHUP.

Unload-first swaps (``swap_mode: unload_first``, memory-constrained devices) free the old
engine before loading the new one. When the new release fails to load, the old one is loaded
again; when that fails too, the device serves nothing: the agent logs both tracebacks, reports
``state: failed`` with ``release: null`` (and ``restore_error``) in ``run/agent.json`` and its
telemetry (``agent.release``/``deploy.release`` null), and publishes a ``not_serving`` deploy
event. The next reload request (e.g. the deploy's rollback) loads ``current`` afresh.

Callers: with ``api_keys_file`` in ``agent-config.json`` (written by ``edgeds device setup``) the
server asks every caller but health for one of its keys (``metrics_public``: ``/metrics`` too is
open); the file is read again at each reload request, so keys rotate with a SIGHUP. With ``tls``
(``cert``, ``key``: PEM paths on the device) the server speaks only HTTPS; ``run/agent.json``
then says ``"scheme": "https"``. A key file or certificate that cannot be loaded at start stops
the agent (it must not serve unprotected what it was told to protect).

Telemetry is optional: with a broker configured in ``agent-config.json`` the agent embeds
:class:`edgeds.telemetry.publisher.TelemetryPublisher`; without one, or when it cannot start,
the agent runs without telemetry and says so in its log.

Inspection: the target's ``inspection:`` stations (copied into ``agent-config.json`` by
``edgeds device setup``) start once a release serves and follow its swaps
(:class:`edgeds.inspection.service.StationService`); their fps, drops and decisions are in every
telemetry message and in ``run/agent.json``. A station that cannot start is reported there and
never stops the agent from serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ._version import __version__
from .deploy.device.store import Store, agent_pid, recover

log = logging.getLogger("edgeds.agent")

CONFIG_FILE = "agent-config.json"


class Agent:
    """One agent over one install dir. :meth:`run` blocks until stopped."""

    def __init__(self, root: str | Path, http_host: str | None = None, http_port: int | None = None) -> None:
        self.store = Store(root)
        config = self._config()
        self.http_host = http_host or str(config.get("http_host", "127.0.0.1"))
        self.http_port = int(http_port if http_port is not None else config.get("http_port", 8000))
        self.device_id = str(config.get("device_id") or os.uname().nodename)
        self.mqtt: dict[str, Any] | None = config.get("mqtt")
        self.unload_first = config.get("swap_mode") == "unload_first"
        self.server_limits: dict[str, Any] = dict(config.get("server") or {})  # the profile's server: block
        self.api_keys_file: str | None = config.get("api_keys_file")
        self.metrics_public = bool(config.get("metrics_public", False))
        tls = config.get("tls") or {}
        self.tls_files: tuple[str, str] | None = (str(tls["cert"]), str(tls["key"])) if tls else None
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._status: dict[str, Any] = {
            "state": "starting",
            "release": None,
            "attempted": None,
            "generation": 0,
            "error": None,
        }
        self._server: Any = None
        self._engine: Any = None
        self._serving: str | None = None
        self._publisher: Any = None
        self._step_server: Any = None
        self._recorder: Any = None  # InferenceRecorder once telemetry runs
        self._model_version: str | None = None
        self._interface: tuple[Any, str] | None = None  # (card, layout) of the release being loaded
        self._opened: dict[str, Any] | None = None  # what the served release opened (Selection.as_dict)
        self._log_forward: Any = None  # the LogForwarder publishing the agent's log lines, with telemetry
        self._stations_config: list[Any] = list(config.get("inspection") or [])
        self._inspection: Any = None  # StationService once a release serves

    def _limits(self) -> Any:
        """The server limits ``agent-config.json`` holds (the target profile's ``server:`` block; the
        defaults without one). Raises ConfigError when they are not valid."""
        from pydantic import ValidationError

        from .config import ServerLimits
        from .errors import ConfigError

        try:
            return ServerLimits.model_validate(self.server_limits)
        except ValidationError as exc:
            raise ConfigError.single(self.store.root / CONFIG_FILE, None, "server", str(exc)) from exc

    def _config(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.store.root / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data

    # -- status --------------------------------------------------------------------------------

    def _write_status(self, **changes: Any) -> None:
        self._status.update(changes)
        if self._inspection is not None:
            try:
                self._status["inspection"] = self._inspection_summary()
            except Exception:  # a station's bug must not stop the status file: deploys wait on it
                log.exception("inspection summary for run/agent.json failed; the previous one is kept")
        self._status.update(
            pid=os.getpid(),
            http=f"{self.http_host}:{self.http_port}",
            scheme="https" if self.tls_files is not None else "http",
            ts=time.time(),
            agent_version=__version__,
        )
        path = self.store.run_dir / "agent.json"
        tmp = path.with_name(f".agent.json.{os.getpid()}")
        tmp.write_text(json.dumps(self._status))
        os.replace(tmp, path)

    # -- model ---------------------------------------------------------------------------------

    def _load(self, release: str) -> Any:
        from .bundle import load_bundle
        from .runtime.engine import Engine
        from .runtime.selection import tensorrt_resolver

        bundle = load_bundle(self.store.releases / release, verify=False)
        try:
            # TensorRT engines: the ones the deploy step built into the store (never built at load)
            resolver = tensorrt_resolver(bundle.card, cache_root=self.store.engines, build=False)
            engine = Engine.from_bundle(bundle, engine_resolver=resolver)
            engine.recorder = self._recorder
            started = engine.start()
            # only a release that loaded is described: a failed one must not relabel the served one
            self._model_version = bundle.manifest.model.version
            index = started.selection.index if started.selection is not None else 0
            self._interface = (bundle.card, bundle.manifest.layout_for(index))
            return started
        finally:
            bundle.close()

    def _restore(self, release: str) -> str | None:
        """Unload-first: the new release failed after the old one was freed; load ``release`` again.

        Returns None when it serves again, else why not; then nothing serves (``_serving`` is None).
        """
        try:
            engine = self._load(release)
            try:
                self._server.add_model(engine)
            except BaseException:
                engine.close()
                raise
        except Exception as exc:  # the agent keeps running: the next reload request may succeed
            log.exception("unload-first: restoring release %s failed; the device serves nothing", release)
            self._engine, self._serving, self._model_version, self._opened = None, None, None, None
            return f"{type(exc).__name__}: {exc}"
        self._engine, self._opened = engine, _opened(engine)
        log.warning("unload-first: release %s serves again after the failed load", release)
        return None

    def _api_keys(self) -> Any:
        """The keys of ``api_keys_file`` (none without one); EdgedsError when it cannot be read."""
        from .runtime.auth import ApiKeys, load_api_keys

        if self.api_keys_file is None:
            return ApiKeys()
        return load_api_keys(key_file=self.api_keys_file, environ=False)

    def _reload_api_keys(self) -> None:
        """Read the key file again (a rotation); on failure the keys in use stay."""
        from .errors import EdgedsError

        try:
            self._server.set_api_keys(self._api_keys())
        except EdgedsError:  # the old keys keep protecting the server; the log says why
            log.exception("API keys not reloaded; the previous keys stay in use")

    def _activate_current(self) -> None:
        """Serve whatever ``current`` points at (no-op if already served)."""
        release = self.store.current_id()
        generation = int(self._status["generation"]) + 1
        self._status.pop("restore_error", None)  # about the previous attempt only
        if release == self._serving:
            self._write_status(
                generation=generation, attempted=release, state="serving" if release else "idle", error=None
            )
            return
        if release is None:
            if self._engine is not None:
                self._server.remove_model(self._engine.name)
            self._engine, self._serving, self._opened = None, None, None
            self._write_status(
                generation=generation, attempted=None, state="idle", release=None, error=None, opened=None
            )
            return
        self._write_status(state="loading", attempted=release)
        started = time.perf_counter()
        old = self._engine
        gap_started = None
        if self.unload_first and old is not None:
            # Memory-constrained mode: free the old engine first; requests get 503 until the new one serves.
            gap_started = time.perf_counter()
            self._server.remove_model(old.name)
            self._engine, old = None, None
        try:
            engine = self._load(release)
        except Exception as exc:  # any failure to load leaves the agent up, reporting ``failed``
            log.error("release %s failed to load", release, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
            previous = self._serving if gap_started is not None else None
            restore_error = self._restore(previous) if previous is not None else None
            if restore_error is None:
                self._write_status(generation=generation, state="failed", error=error, opened=self._opened)
                return
            self._write_status(
                generation=generation,
                state="failed",
                release=None,
                opened=None,
                error=f"{error}; the previous release {previous} could not be restored: {restore_error}",
                restore_error=restore_error,
            )
            self._publish("deploy", {"event": "not_serving", "release": release, "restored": previous, "error": error})
            return
        load_s = round(time.perf_counter() - started, 3)
        if self._inspection is not None and self._interface is not None:
            try:
                self._inspection.before_swap(*self._interface)  # stations of a changed interface stop first
            except Exception:  # inspection never blocks a model swap; the stations report their own state
                log.exception("inspection: stopping stations before the swap to %s failed", release)
        if old is not None and old.name == engine.name:
            report = self._server.swap_model(engine)
            log.info(
                "swapped %s -> %s, old engine drained in %.3fs (complete: %s)",
                self._serving,
                release,
                report.drain_s,
                report.drained,
            )
        else:
            self._server.add_model(engine)
            if old is not None:
                self._server.remove_model(old.name)
        self._engine, self._serving, self._opened = engine, release, _opened(engine)
        if self._recorder is not None:
            self._recorder.set_model_load_time(load_s)
        gap_s = round(time.perf_counter() - gap_started, 3) if gap_started is not None else 0.0
        if gap_started is not None:
            log.warning("unload-first swap: not serving for %.3fs", gap_s)
        self._write_status(
            generation=generation,
            state="serving",
            release=release,
            error=None,
            load_s=load_s,
            gap_s=gap_s,
            opened=self._opened,
        )
        self._publish("deploy", {"event": "serving", "release": release, "load_s": load_s, "opened": self._opened})
        self._start_inspection()  # after the status: a deploy waiting on it never waits on the stations

    # -- inspection ----------------------------------------------------------------------------

    def _start_inspection(self) -> None:
        """Start (or follow a swap with) the target's inspection stations; never fatal."""
        if not self._stations_config or self._interface is None:
            return
        try:
            if self._inspection is None:
                from .config import InspectionStation
                from .inspection.service import StationService

                stations = [InspectionStation.model_validate(s) for s in self._stations_config]
                interval = float((self.mqtt or {}).get("telemetry_interval_s") or 5.0)
                self._inspection = StationService(
                    stations, lambda: self._engine, self.store, publisher=self._publisher, stats_interval_s=interval
                )
            card, layout = self._interface
            self._inspection.ensure(card, layout)
        except Exception as exc:  # a station that cannot start never stops the agent from serving
            log.error("inspection stations not started: %s", exc, exc_info=True)
            self._status["inspection_error"] = f"{type(exc).__name__}: {exc}"

    # -- telemetry -----------------------------------------------------------------------------

    def _start_telemetry(self) -> None:
        if not self.mqtt or not self.mqtt.get("url"):
            log.warning("no MQTT broker configured for this device: running without telemetry")
            return
        try:
            from .config import MqttConfig
            from .telemetry.metrics import InferenceRecorder
            from .telemetry.publisher import TelemetryPublisher

            config = MqttConfig.model_validate(self.mqtt)
            self._recorder = InferenceRecorder(queue_depth=self._queue_depth)
            self._publisher = TelemetryPublisher(
                config,
                self.device_id,
                self.store.root / "telemetry" / "spool.db",
                __version__,
                metrics_source=self._metrics,
            ).start()
            log.info("telemetry to %s as %s", config.url, self.device_id)
            if self._config().get("publish_logs", True):
                from .telemetry.log_forward import LogForwarder

                # the agent's log lines on <prefix>/<device>/log: `edgeds logs --mqtt` reads them
                self._log_forward = LogForwarder(self._publisher).start()
                logging.getLogger().addHandler(self._log_forward)
        except Exception as exc:  # telemetry must never stop the agent from serving
            log.warning("telemetry disabled: %s", exc, exc_info=True)
            self._publisher = None

    def _queue_depth(self) -> int:
        engine = self._engine
        return int(engine.queue_depth()) if engine is not None else 0

    def _metrics(self) -> dict[str, Any]:
        """Extra sections of each periodic telemetry message (host metrics are the publisher's)."""
        deploy = {
            "release": self._serving,
            "model_version": self._model_version if self._serving else None,
            "opened": self._opened if self._serving else None,
        }
        data: dict[str, Any] = {"agent": {"release": self._serving, "state": self._status["state"]}, "deploy": deploy}
        if self._recorder is not None:
            data["inference"] = self._recorder.snapshot()
        if self._inspection is not None:
            data["inspection"] = self._inspection_summary()
        return data

    def _inspection_summary(self) -> dict[str, Any]:
        """Per station: fps, drops, corrupt frames, decisions (the telemetry/status view)."""
        keys = ("fps", "fps_recent", "processed", "dropped", "corrupt", "errors", "connected", "decisions", "alarms")
        stations = {s["station"]: {k: s[k] for k in keys} for s in self._inspection.stats()}
        return {"stations": stations, "errors": self._inspection.errors()}

    def _prometheus(self) -> str:
        """The latest telemetry sample (host, inference, deploy) as Prometheus gauges for /metrics."""
        from .telemetry.metrics import to_prometheus

        payload = self._publisher.last_payload if self._publisher is not None else None
        return to_prometheus(payload, labels={"device": self.device_id}) if payload else ""

    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        if self._publisher is not None:
            try:
                self._publisher.publish(kind, payload, deploy_id=payload.get("release"))
            except Exception:  # telemetry must never stop the agent from serving (the status file has it)
                log.warning("telemetry: %s event not spooled", kind, exc_info=True)

    # -- step server ---------------------------------------------------------------------------

    def _start_step_server(self) -> None:
        """Start :func:`edgeds.deploy.device.server.serve` as a child: deploy steps then fork from a process
        that has edgeds imported instead of starting an interpreter each (it exits with us)."""
        import subprocess
        import sys

        try:
            self._step_server = subprocess.Popen(
                [sys.executable, "-m", "edgeds.deploy.device", "serve", "--root", str(self.store.root)],
                stdin=subprocess.DEVNULL,
                cwd=str(self.store.root),
            )
        except OSError as exc:
            log.warning("no step server (deploy steps start their own interpreter): %s", exc)
            self._step_server = None

    # -- main ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        self._reload.set()

    def stop(self) -> None:
        self._stop.set()
        self._reload.set()

    def _take_pid_file(self) -> None:
        self.store.ensure()
        other = agent_pid(self.store)
        if other is not None and other != os.getpid():
            from .errors import DeviceError

            raise DeviceError(f"another agent (pid {other}) is running for {self.store.root}")
        pid_path = self.store.run_dir / "agent.pid"
        tmp = pid_path.with_name(f".agent.pid.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_path)

    def run(self, install_signals: bool = True) -> None:
        from .runtime.server import InferenceServer

        if install_signals:  # before the pid file: a deploy SIGHUPs only pids found there
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._take_pid_file()
        self._start_step_server()
        recovered = recover(self.store)
        if recovered:
            log.warning("rolled back an uncommitted activation: %s", recovered)
        from .runtime.auth import server_tls_context

        tls = server_tls_context(*self.tls_files) if self.tls_files is not None else None
        keys = self._api_keys()
        self._server = InferenceServer(
            [],
            host=self.http_host,
            port=self.http_port,
            limits=self._limits(),
            api_keys=keys,
            metrics_public=self.metrics_public,
            tls=tls,
        ).start()
        self.http_port = self._server.port  # port 0 picks a free one
        self._write_status(state="starting")
        log.info(
            "listening on %s:%s (%s, %s)",
            self.http_host,
            self.http_port,
            "HTTPS" if tls is not None else "HTTP",
            f"{len(keys)} API key(s)" if keys else "no API key",
        )
        self._start_telemetry()
        self._server.extra_metrics = self._prometheus
        self._activate_current()
        try:
            while not self._stop.is_set():
                if self._reload.wait(5.0):
                    self._reload.clear()
                    if self._stop.is_set():
                        break
                    self._reload_api_keys()
                    self._activate_current()
                else:
                    self._write_status()
        finally:
            if self._inspection is not None:
                try:
                    self._inspection.stop()
                except Exception:  # the server, step server and pid file must still be released
                    log.exception("inspection: stopping the stations failed")
            self._write_status(state="stopped")
            if self._step_server is not None:
                self._step_server.terminate()
            self._server.stop(close_engines=True)
            if self._log_forward is not None:
                logging.getLogger().removeHandler(self._log_forward)
                try:
                    self._log_forward.close()  # its last lines go out with the publisher's drain
                except Exception:  # the publisher and pid file must still be released
                    log.exception("telemetry: stopping the log forwarder failed")
            if self._publisher is not None:
                try:
                    self._publisher.stop()
                except Exception:  # the pid file must still be released; unsent messages stay spooled
                    log.exception("telemetry: stopping the publisher failed")
            with contextlib.suppress(OSError):
                pid_path = self.store.run_dir / "agent.pid"
                if pid_path.read_text().strip() == str(os.getpid()):
                    pid_path.unlink()


def _opened(engine: Any) -> dict[str, Any] | None:
    """What a started engine opened (``Selection.as_dict``), None for an engine without a selection."""
    selection = getattr(engine, "selection", None)
    return selection.as_dict() if selection is not None else None


def run_agent(root: str | Path, http_host: str | None = None, http_port: int | None = None) -> None:
    """Run the agent in the foreground (what the service runs)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Agent(root, http_host, http_port).run()
